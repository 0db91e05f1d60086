package com.fkod.sdk;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The fields of a user to change; fields that are not set stay as they are. Setting the name
 * or the archetype to null clears it. At least one field must be set.
 */
public class UserUpdateParams {
    private final Map<String, Object> body = new LinkedHashMap<>();

    public UserUpdateParams email(String email) {
        body.put("email", email);
        return this;
    }

    public UserUpdateParams name(String name) {
        body.put("name", name);
        return this;
    }

    public UserUpdateParams archetype(String archetype) {
        body.put("archetype", archetype);
        return this;
    }

    Map<String, Object> toJson() {
        return body;
    }
}
