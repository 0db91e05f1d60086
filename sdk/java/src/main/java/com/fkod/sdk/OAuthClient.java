package com.fkod.sdk;

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The OAuth 2.0 flows of a server-side application registered on the platform: the
 * authorization code flow with PKCE (S256), refresh with rotation, client credentials and
 * revocation.
 */
public final class OAuthClient {
    /** A token is renewed this long before its expiry, so a request does not arrive after it. */
    private static final Duration RENEW_MARGIN = Duration.ofSeconds(30);

    private final URI baseUri;
    private final String clientId;
    private final String clientSecret;
    private final String redirectUri;
    private final Duration timeout = FkodClient.DEFAULT_TIMEOUT;

    /**
     * @param baseUrl the platform's address; FKOD_BASE_URL when null
     * @param clientSecret the secret of a confidential application, sent with HTTP Basic
     *     authentication; null for a public application, which relies on PKCE alone
     * @param redirectUri the registered redirect URI, or null for the client credentials grant
     */
    public OAuthClient(String baseUrl, String clientId, String clientSecret, String redirectUri) {
        String base = baseUrl != null ? baseUrl : System.getenv("FKOD_BASE_URL");
        if (base == null || base.isEmpty()) {
            throw new IllegalArgumentException("no base URL: pass one or set FKOD_BASE_URL");
        }
        if (clientId == null || clientId.isEmpty()) {
            throw new IllegalArgumentException("a client id is required");
        }
        this.baseUri = URI.create(base.replaceAll("/+$", ""));
        this.clientId = clientId;
        this.clientSecret = clientSecret;
        this.redirectUri = redirectUri;
    }

    /** Returns the /oauth/authorize URL to send the user's browser to. */
    public String authorizeUrl(String state, String codeChallenge, List<String> scopes) {
        Map<String, String> query = new LinkedHashMap<>();
        query.put("response_type", "code");
        query.put("client_id", clientId);
        if (redirectUri != null) {
            query.put("redirect_uri", redirectUri);
        }
        if (scopes != null && !scopes.isEmpty()) {
            query.put("scope", String.join(" ", scopes));
        }
        query.put("state", state);
        query.put("code_challenge", codeChallenge);
        query.put("code_challenge_method", "S256");
        return baseUri + "/oauth/authorize?" + formEncode(query);
    }

    /** Exchanges the code of the redirect, with the verifier of its challenge, for tokens. */
    public OAuthToken exchangeCode(String code, String codeVerifier) {
        Map<String, String> form = new LinkedHashMap<>();
        form.put("grant_type", "authorization_code");
        form.put("code", code);
        form.put("code_verifier", codeVerifier);
        if (redirectUri != null) {
            form.put("redirect_uri", redirectUri);
        }
        return OAuthToken.fromJson(post("/oauth/token", form));
    }

    /**
     * Exchanges a refresh token for a new access token and a new refresh token. {@code scopes}
     * may narrow the grant; when null or empty, the token keeps its scopes.
     */
    public OAuthToken refresh(String refreshToken, List<String> scopes) {
        Map<String, String> form = new LinkedHashMap<>();
        form.put("grant_type", "refresh_token");
        form.put("refresh_token", refreshToken);
        if (scopes != null && !scopes.isEmpty()) {
            form.put("scope", String.join(" ", scopes));
        }
        return OAuthToken.fromJson(post("/oauth/token", form));
    }

    /**
     * Gets a token that acts for the partner itself, for a confidential application registered
     * with the client_credentials grant. With no scopes it gets every scope of the application.
     */
    public OAuthToken clientCredentials(List<String> scopes) {
        Map<String, String> form = new LinkedHashMap<>();
        form.put("grant_type", "client_credentials");
        if (scopes != null && !scopes.isEmpty()) {
            form.put("scope", String.join(" ", scopes));
        }
        return OAuthToken.fromJson(post("/oauth/token", form));
    }

    /** Revokes an access or refresh token, as RFC 7009 defines it. */
    public void revoke(String token) {
        post("/oauth/revoke", new LinkedHashMap<>(Map.of("token", token)));
    }

    /**
     * Returns a token provider for {@link FkodClient.Builder#tokenProvider} that gets tokens
     * with the client credentials grant and reuses each until shortly before it expires.
     */
    public TokenProvider clientCredentialsTokenProvider(List<String> scopes) {
        return new TokenProvider() {
            private OAuthToken current;

            @Override
            public synchronized String token() {
                if (current == null
                        || Instant.now().plus(RENEW_MARGIN).isAfter(current.expiresAt())) {
                    current = clientCredentials(scopes);
                }
                return current.accessToken();
            }
        };
    }

    private Object post(String path, Map<String, String> form) {
        HttpRequest.Builder builder = HttpRequest.newBuilder(URI.create(baseUri + path))
                .timeout(timeout)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Accept", "application/json")
                .header("User-Agent", "fkod-java/" + Version.SDK);
        if (clientSecret != null) {
            // RFC 6749 section 2.3.1 form-encodes both parts before the Basic encoding.
            String credentials = URLEncoder.encode(clientId, StandardCharsets.UTF_8) + ":"
                    + URLEncoder.encode(clientSecret, StandardCharsets.UTF_8);
            builder.header("Authorization", "Basic " + Base64.getEncoder()
                    .encodeToString(credentials.getBytes(StandardCharsets.UTF_8)));
        } else {
            form.put("client_id", clientId);
        }
        HttpRequest request = builder.POST(HttpRequest.BodyPublishers.ofString(formEncode(form))).build();

        // Each token request opens its own connection, because a pooled connection that the
        // server has already closed fails the request without a response. A code exchange or
        // a refresh cannot be resent, since the platform treats a reused code or refresh token
        // as stolen and revokes the tokens issued with it. Token requests are rare, so the
        // cost of a new connection is small.
        HttpClient httpClient = HttpClient.newBuilder().connectTimeout(timeout).build();
        HttpResponse<String> response;
        try {
            response = httpClient.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new ConnectionException("POST " + request.uri() + " failed: " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ConnectionException("POST " + request.uri() + " was interrupted", e);
        }

        String body = response.body();
        int status = response.statusCode();
        if (status >= 200 && status < 300) {
            return body == null || body.isEmpty() ? Map.of() : Json.parse(body);
        }
        String error = null;
        String description = null;
        try {
            Map<String, Object> object = Json.parseObject(body);
            error = Fields.string(object, "error");
            description = Fields.string(object, "error_description");
            if (error == null) {
                // Errors outside the OAuth protocol, such as a rate limit, use the API envelope.
                error = Fields.string(object, "code");
                description = Fields.string(object, "message");
            }
        } catch (IllegalArgumentException e) {
            error = null;
        }
        throw new OAuthException(status, error != null ? error : "http_" + status, description);
    }

    private static String formEncode(Map<String, String> values) {
        StringBuilder text = new StringBuilder();
        for (Map.Entry<String, String> entry : values.entrySet()) {
            if (text.length() > 0) {
                text.append('&');
            }
            text.append(URLEncoder.encode(entry.getKey(), StandardCharsets.UTF_8)).append('=')
                    .append(URLEncoder.encode(entry.getValue(), StandardCharsets.UTF_8));
        }
        return text.toString();
    }
}
