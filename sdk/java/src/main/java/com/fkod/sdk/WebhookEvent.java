package com.fkod.sdk;

import java.util.Map;

/**
 * A verified webhook event.
 *
 * @param created Unix seconds
 * @param data the event's data object, whose shape depends on the type
 */
public record WebhookEvent(String id, String type, long created, boolean livemode,
                           Map<String, Object> data) {
    @SuppressWarnings("unchecked")
    static WebhookEvent fromJson(Object json) {
        Map<String, Object> object = Fields.object(json);
        Object data = object.get("data");
        return new WebhookEvent(Fields.string(object, "id"), Fields.string(object, "type"),
                Fields.number(object, "created"), Fields.bool(object, "livemode"),
                data instanceof Map ? (Map<String, Object>) data : Map.of());
    }
}
