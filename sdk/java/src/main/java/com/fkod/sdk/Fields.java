package com.fkod.sdk;

import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/** Typed reads of parsed JSON objects, for the model classes. */
final class Fields {
    private Fields() {
    }

    static String string(Map<String, Object> object, String name) {
        Object value = object.get(name);
        return value == null ? null : value.toString();
    }

    static boolean bool(Map<String, Object> object, String name) {
        return Boolean.TRUE.equals(object.get(name));
    }

    static long number(Map<String, Object> object, String name) {
        Object value = object.get(name);
        return value instanceof Number ? ((Number) value).longValue() : 0L;
    }

    /** Reads an ISO 8601 timestamp such as "2026-12-01T10:00:00Z", or null when absent. */
    static Instant instant(Map<String, Object> object, String name) {
        String value = string(object, name);
        if (value == null) {
            return null;
        }
        try {
            return Instant.parse(value);
        } catch (DateTimeParseException e) {
            throw new FkodException("invalid timestamp in field " + name + ": " + value, e);
        }
    }

    static List<String> strings(Map<String, Object> object, String name) {
        Object value = object.get(name);
        if (!(value instanceof List)) {
            return Collections.emptyList();
        }
        List<String> result = new ArrayList<>();
        for (Object item : (List<?>) value) {
            result.add(String.valueOf(item));
        }
        return Collections.unmodifiableList(result);
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> object(Object value) {
        if (!(value instanceof Map)) {
            throw new FkodException("expected a JSON object in the response");
        }
        return (Map<String, Object>) value;
    }
}
