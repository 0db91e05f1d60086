package com.fkod.sdk;

import java.time.Instant;
import java.util.Map;

/** The record that a user completed a course. */
public record Completion(String id, String courseId, String userId, String status,
                         Instant completedAt) {
    static Completion fromJson(Object json) {
        Map<String, Object> object = Fields.object(json);
        return new Completion(Fields.string(object, "id"), Fields.string(object, "course_id"),
                Fields.string(object, "user_id"), Fields.string(object, "status"),
                Fields.instant(object, "completed_at"));
    }
}
