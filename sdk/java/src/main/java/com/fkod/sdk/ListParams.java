package com.fkod.sdk;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Selects a page of a list: {@code limit} is 1 to 100 (the platform's default is 20 when
 * unset) and {@code cursor} is the {@code nextCursor} of the previous page.
 */
public class ListParams {
    private Integer limit;
    private String cursor;
    private final Map<String, String> filters = new LinkedHashMap<>();

    public ListParams limit(int limit) {
        this.limit = limit;
        return this;
    }

    public ListParams cursor(String cursor) {
        this.cursor = cursor;
        return this;
    }

    /** Lists only the users with this email; the users list accepts this filter. */
    public ListParams email(String email) {
        filters.put("email", email);
        return this;
    }

    ListParams withCursor(String nextCursor) {
        ListParams copy = new ListParams();
        copy.limit = limit;
        copy.cursor = nextCursor;
        copy.filters.putAll(filters);
        return copy;
    }

    String cursor() {
        return cursor;
    }

    Map<String, String> query() {
        Map<String, String> query = new LinkedHashMap<>(filters);
        if (limit != null) {
            query.put("limit", limit.toString());
        }
        if (cursor != null) {
            query.put("cursor", cursor);
        }
        return query;
    }
}
