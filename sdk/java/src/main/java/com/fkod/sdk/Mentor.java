package com.fkod.sdk;

import java.util.List;
import java.util.Map;

/** A mentor of the catalog. */
public record Mentor(String id, String name, List<String> expertiseAreas, String bio) {
    static Mentor fromJson(Object json) {
        Map<String, Object> object = Fields.object(json);
        return new Mentor(Fields.string(object, "id"), Fields.string(object, "name"),
                Fields.strings(object, "expertise_areas"), Fields.string(object, "bio"));
    }
}
