package com.fkod.sdk;

import java.net.http.HttpHeaders;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * A response with a status other than 2xx. The platform sends every error as the envelope
 * {@code {"status", "code", "message", "errors", "request_id"}}.
 */
public class ApiException extends FkodException {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String code;
    private final String errorMessage;
    private final List<FieldError> fieldErrors;
    private final String requestId;
    private final Duration retryAfter;
    private final transient RateLimit rateLimit;
    private final String body;

    ApiException(int status, String code, String errorMessage, List<FieldError> fieldErrors,
                 String requestId, Duration retryAfter, RateLimit rateLimit, String body) {
        super(describe(status, code, errorMessage, fieldErrors, requestId));
        this.status = status;
        this.code = code;
        this.errorMessage = errorMessage;
        this.fieldErrors = Collections.unmodifiableList(fieldErrors);
        this.requestId = requestId;
        this.retryAfter = retryAfter;
        this.rateLimit = rateLimit;
        this.body = body;
    }

    /** Builds the exception from a response's status, headers and body. */
    static ApiException fromResponse(int status, HttpHeaders headers, String body) {
        String code = null;
        String message = null;
        String requestId = headers.firstValue("X-Request-Id").orElse(null);
        List<FieldError> fieldErrors = new ArrayList<>();
        try {
            Map<String, Object> envelope = Json.parseObject(body);
            code = Fields.string(envelope, "code");
            message = Fields.string(envelope, "message");
            if (requestId == null) {
                requestId = Fields.string(envelope, "request_id");
            }
            if (envelope.get("errors") instanceof List<?> errors) {
                for (Object item : errors) {
                    Map<String, Object> error = Fields.object(item);
                    fieldErrors.add(new FieldError(Fields.string(error, "location"),
                            Fields.string(error, "name"), Fields.string(error, "description")));
                }
            }
        } catch (IllegalArgumentException | FkodException e) {
            // Not an envelope, such as an error page of a proxy: the status alone describes it.
            code = null;
        }
        if (code == null) {
            code = "http_" + status;
            message = "HTTP status " + status;
        }

        Duration retryAfter = Duration.ZERO;
        Optional<String> header = headers.firstValue("Retry-After");
        if (header.isPresent()) {
            try {
                retryAfter = Duration.ofSeconds(Math.max(0, Long.parseLong(header.get().trim())));
            } catch (NumberFormatException e) {
                retryAfter = Duration.ZERO;
            }
        }
        return new ApiException(status, code, message, fieldErrors, requestId, retryAfter,
                RateLimit.fromHeaders(headers).orElse(null), body);
    }

    private static String describe(int status, String code, String message,
                                   List<FieldError> fieldErrors, String requestId) {
        StringBuilder text = new StringBuilder();
        text.append(status).append(' ').append(code).append(": ").append(message);
        for (FieldError error : fieldErrors) {
            text.append(" [").append(error.location()).append(' ').append(error.name())
                    .append(": ").append(error.description()).append(']');
        }
        if (requestId != null) {
            text.append(" (request id ").append(requestId).append(')');
        }
        return text.toString();
    }

    /** The HTTP status, such as 400 or 429. */
    public int status() {
        return status;
    }

    /** The stable machine-readable code, such as "validation_failed", or "http_STATUS". */
    public String code() {
        return code;
    }

    /** The envelope's human-readable message. */
    public String errorMessage() {
        return errorMessage;
    }

    /** The invalid fields, empty for errors that concern no single field. */
    public List<FieldError> fieldErrors() {
        return fieldErrors;
    }

    /** The error about the named field, if there is one. */
    public Optional<FieldError> fieldError(String name) {
        return fieldErrors.stream().filter(error -> name.equals(error.name())).findFirst();
    }

    /** The X-Request-Id header, or the envelope's request_id without one. */
    public String requestId() {
        return requestId;
    }

    /** The Retry-After of a 429 or 503 response, or zero. */
    public Duration retryAfter() {
        return retryAfter;
    }

    /** The rate-limit headers of the response, if the call was counted. */
    public Optional<RateLimit> rateLimit() {
        return Optional.ofNullable(rateLimit);
    }

    /** The raw response body. */
    public String body() {
        return body;
    }

    boolean isRetryable() {
        // A 409 idempotency_request_in_progress means the first request with this key still
        // runs, so a later retry gets its stored response.
        return status == 429 || status == 503
                || (status == 409 && "idempotency_request_in_progress".equals(code));
    }
}
