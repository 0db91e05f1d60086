package com.fkod.sdk;

import java.util.LinkedHashMap;
import java.util.Map;

/** Settings of one call that override the client's. */
public class RequestOptions {
    private String idempotencyKey;
    private boolean noIdempotencyKey;
    private String apiVersion;
    private Integer maxRetries;
    private final Map<String, String> headers = new LinkedHashMap<>();

    /** Options that change nothing. */
    public static RequestOptions none() {
        return new RequestOptions();
    }

    /**
     * Sends this Idempotency-Key with a POST in place of the one the SDK generates. Sending the
     * same key again returns the stored response of the first call.
     */
    public RequestOptions idempotencyKey(String key) {
        this.idempotencyKey = key;
        return this;
    }

    /** Sends a POST without an Idempotency-Key; such a POST is never retried. */
    public RequestOptions withoutIdempotencyKey() {
        this.noIdempotencyKey = true;
        return this;
    }

    /** Sends this dated version in the FKOD-Version header. */
    public RequestOptions apiVersion(String version) {
        this.apiVersion = version;
        return this;
    }

    /** Sets the number of retries of this call; 0 makes no retry. */
    public RequestOptions maxRetries(int retries) {
        this.maxRetries = retries;
        return this;
    }

    /** Adds a request header. */
    public RequestOptions header(String name, String value) {
        headers.put(name, value);
        return this;
    }

    String idempotencyKey() {
        return idempotencyKey;
    }

    boolean noIdempotencyKey() {
        return noIdempotencyKey;
    }

    String apiVersion() {
        return apiVersion;
    }

    Integer maxRetries() {
        return maxRetries;
    }

    Map<String, String> headers() {
        return headers;
    }
}
