package com.fkod.sdk;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * One page of a cursor-paginated list.
 *
 * @param nextCursor the cursor of the next page, or null on the last page
 */
public record Page<T>(List<T> data, boolean hasMore, String nextCursor) {
    static <T> Page<T> fromJson(Object json, Function<Object, T> item) {
        Map<String, Object> object = Fields.object(json);
        List<T> data = new ArrayList<>();
        if (object.get("data") instanceof List<?> items) {
            for (Object value : items) {
                data.add(item.apply(value));
            }
        }
        return new Page<>(Collections.unmodifiableList(data), Fields.bool(object, "has_more"),
                Fields.string(object, "next_cursor"));
    }
}
