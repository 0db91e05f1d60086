package com.fkod.sdk;

/**
 * One invalid part of a request, from the error envelope's "errors" list.
 *
 * @param location where the value was: "body", "query", "path" or "header"
 * @param name the field or parameter name
 * @param description what is wrong with it
 */
public record FieldError(String location, String name, String description) {
}
