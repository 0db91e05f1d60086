package com.fkod.sdk;

/** The base class of every exception the SDK throws. */
public class FkodException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public FkodException(String message) {
        super(message);
    }

    public FkodException(String message, Throwable cause) {
        super(message, cause);
    }
}
