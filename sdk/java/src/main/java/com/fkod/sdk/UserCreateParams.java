package com.fkod.sdk;

import java.util.LinkedHashMap;
import java.util.Map;

/** The body of a user creation; the email is required. */
public class UserCreateParams {
    private final Map<String, Object> body = new LinkedHashMap<>();

    public UserCreateParams(String email) {
        body.put("email", email);
    }

    public UserCreateParams name(String name) {
        body.put("name", name);
        return this;
    }

    /** Sets the archetype: innovator, explorer, builder, mentor, achiever or collaborator. */
    public UserCreateParams archetype(String archetype) {
        body.put("archetype", archetype);
        return this;
    }

    Map<String, Object> toJson() {
        return body;
    }
}
