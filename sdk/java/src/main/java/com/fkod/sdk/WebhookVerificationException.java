package com.fkod.sdk;

/** A webhook delivery whose signature failed verification. */
public class WebhookVerificationException extends FkodException {
    private static final long serialVersionUID = 1L;

    /** Reason codes, the same as the platform's own verifier uses. */
    public static final String MISSING_SIGNATURE = "missing_signature";
    public static final String MALFORMED_HEADER = "malformed_header";
    public static final String MALFORMED_TIMESTAMP = "malformed_timestamp";
    public static final String TIMESTAMP_OUTSIDE_TOLERANCE = "timestamp_outside_tolerance";
    public static final String SIGNATURE_MISMATCH = "signature_mismatch";

    private final String reason;

    WebhookVerificationException(String reason, String message) {
        super("webhook verification failed (" + reason + "): " + message);
        this.reason = reason;
    }

    /** Returns the reason code, one of the constants above. */
    public String reason() {
        return reason;
    }
}
