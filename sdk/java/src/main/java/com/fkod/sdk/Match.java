package com.fkod.sdk;

import java.time.Instant;
import java.util.Map;

/** A match of a user with a mentor. */
public record Match(String id, String mentorId, String userId, String note, Instant createdAt) {
    static Match fromJson(Object json) {
        Map<String, Object> object = Fields.object(json);
        return new Match(Fields.string(object, "id"), Fields.string(object, "mentor_id"),
                Fields.string(object, "user_id"), Fields.string(object, "note"),
                Fields.instant(object, "created_at"));
    }
}
