package com.fkod.sdk;

import java.net.http.HttpHeaders;
import java.time.Instant;
import java.util.Optional;

/**
 * The tightest rate-limit window that the gateway reported for a call.
 *
 * @param limit requests per window
 * @param remaining requests still free in the window
 * @param reset when the oldest counted calls leave the window
 */
public record RateLimit(long limit, long remaining, Instant reset) {
    /** Reads the X-RateLimit-* headers; empty when the call was not counted. */
    public static Optional<RateLimit> fromHeaders(HttpHeaders headers) {
        try {
            Optional<String> limit = headers.firstValue("X-RateLimit-Limit");
            if (limit.isEmpty()) {
                return Optional.empty();
            }
            long remaining = Long.parseLong(headers.firstValue("X-RateLimit-Remaining").orElse("0"));
            long reset = Long.parseLong(headers.firstValue("X-RateLimit-Reset").orElse("0"));
            return Optional.of(new RateLimit(Long.parseLong(limit.get()), remaining,
                    Instant.ofEpochSecond(reset)));
        } catch (NumberFormatException e) {
            return Optional.empty();
        }
    }
}
