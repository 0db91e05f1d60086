package com.fkod.sdk;

import java.time.Instant;
import java.util.Map;

/**
 * A user in the partner's tenancy.
 *
 * @param name null when not set
 * @param archetype one of innovator, explorer, builder, mentor, achiever and collaborator, or null
 */
public record User(String id, String email, String name, String archetype, Instant createdAt,
                   Instant updatedAt) {
    static User fromJson(Object json) {
        Map<String, Object> object = Fields.object(json);
        return new User(Fields.string(object, "id"), Fields.string(object, "email"),
                Fields.string(object, "name"), Fields.string(object, "archetype"),
                Fields.instant(object, "created_at"), Fields.instant(object, "updated_at"));
    }
}
