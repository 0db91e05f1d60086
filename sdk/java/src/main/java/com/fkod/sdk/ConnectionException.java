package com.fkod.sdk;

/** A call that got no HTTP response after its retries: refused or reset, or timed out. */
public class ConnectionException extends FkodException {
    private static final long serialVersionUID = 1L;

    public ConnectionException(String message, Throwable cause) {
        super(message, cause);
    }
}
