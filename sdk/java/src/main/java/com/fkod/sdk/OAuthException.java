package com.fkod.sdk;

/**
 * An error response of the token or revocation endpoint, as RFC 6749 section 5.2 defines it,
 * such as {@code invalid_grant} or {@code invalid_client}.
 */
public class OAuthException extends FkodException {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String error;
    private final String errorDescription;

    OAuthException(int status, String error, String errorDescription) {
        super("OAuth error " + status + " " + error
                + (errorDescription == null ? "" : ": " + errorDescription));
        this.status = status;
        this.error = error;
        this.errorDescription = errorDescription;
    }

    public int status() {
        return status;
    }

    /** Returns the OAuth error code, such as "invalid_grant". */
    public String error() {
        return error;
    }

    /** Returns the server's description of the error, or null. */
    public String errorDescription() {
        return errorDescription;
    }
}
