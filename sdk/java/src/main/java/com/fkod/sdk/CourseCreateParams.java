package com.fkod.sdk;

import java.util.LinkedHashMap;
import java.util.Map;

/** The body of a course creation; the title is required. */
public class CourseCreateParams {
    private final Map<String, Object> body = new LinkedHashMap<>();

    public CourseCreateParams(String title) {
        body.put("title", title);
    }

    public CourseCreateParams description(String description) {
        body.put("description", description);
        return this;
    }

    /** Sets the level: beginner, intermediate or advanced. */
    public CourseCreateParams level(String level) {
        body.put("level", level);
        return this;
    }

    Map<String, Object> toJson() {
        return body;
    }
}
