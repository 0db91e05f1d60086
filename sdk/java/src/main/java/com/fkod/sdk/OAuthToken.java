package com.fkod.sdk;

import java.time.Instant;
import java.util.Map;

/**
 * A response of the token endpoint.
 *
 * @param expiresIn the access token's lifetime in seconds
 * @param refreshToken null for the client credentials grant; each refresh returns a new one
 *     and the old one stops working
 * @param expiresAt computed from {@code expiresIn} when the response arrived
 */
public record OAuthToken(String accessToken, String tokenType, long expiresIn, String refreshToken,
                         String scope, Instant expiresAt) {
    static OAuthToken fromJson(Object json) {
        Map<String, Object> object = Fields.object(json);
        long expiresIn = Fields.number(object, "expires_in");
        return new OAuthToken(Fields.string(object, "access_token"),
                Fields.string(object, "token_type"), expiresIn,
                Fields.string(object, "refresh_token"), Fields.string(object, "scope"),
                Instant.now().plusSeconds(expiresIn));
    }
}
