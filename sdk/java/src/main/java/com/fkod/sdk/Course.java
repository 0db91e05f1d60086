package com.fkod.sdk;

import java.time.Instant;
import java.util.Map;

/**
 * A course of the F-KOD catalog (owner "fkod") or of the partner (owner "partner").
 *
 * @param level beginner, intermediate, advanced or null
 */
public record Course(String id, String title, String description, String level, String owner,
                     Instant createdAt, Instant updatedAt) {
    static Course fromJson(Object json) {
        Map<String, Object> object = Fields.object(json);
        return new Course(Fields.string(object, "id"), Fields.string(object, "title"),
                Fields.string(object, "description"), Fields.string(object, "level"),
                Fields.string(object, "owner"), Fields.instant(object, "created_at"),
                Fields.instant(object, "updated_at"));
    }
}
