package com.fkod.sdk;

/**
 * Supplies an OAuth access token for each request, so that a token can be renewed while the
 * client is in use. {@link OAuthClient#clientCredentialsTokenProvider} returns one.
 */
@FunctionalInterface
public interface TokenProvider {
    String token();
}
