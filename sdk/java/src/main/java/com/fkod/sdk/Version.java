package com.fkod.sdk;

/** The SDK's version and the API version it is written against. */
public final class Version {
    /** The version of this SDK, the same as the VERSION file; sent in the User-Agent header. */
    public static final String SDK = "0.1.0";

    /**
     * The dated F-KOD API version that the client sends in the FKOD-Version header, so that a
     * change of the API key's default version does not change the responses the SDK parses.
     */
    public static final String API = "2026-12-01";

    private Version() {
    }
}
