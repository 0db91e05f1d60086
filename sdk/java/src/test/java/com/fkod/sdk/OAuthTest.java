package com.fkod.sdk;

import java.net.CookieManager;
import java.net.URI;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The OAuth helpers against the live authorization server. */
public class OAuthTest {
    private static final Pattern CSRF = Pattern.compile("name=\"csrf_token\" value=\"([^\"]+)\"");

    private final String baseUrl = Check.requireEnv("FKOD_BASE_URL");
    private final String clientId = Check.requireEnv("FKOD_OAUTH_CLIENT_ID");
    private final String clientSecret = Check.requireEnv("FKOD_OAUTH_CLIENT_SECRET");
    private final String redirectUri = Check.requireEnv("FKOD_OAUTH_REDIRECT_URI");

    private OAuthClient oauth(String secret) {
        return new OAuthClient(baseUrl, clientId, secret, redirectUri);
    }

    @Test
    public void codeChallengeMatchesAnotherImplementation() {
        // FKOD_PKCE_CHALLENGE was computed from FKOD_PKCE_VERIFIER by another implementation.
        String verifier = Check.requireEnv("FKOD_PKCE_VERIFIER");
        Check.equal(Check.requireEnv("FKOD_PKCE_CHALLENGE"), Pkce.codeChallengeS256(verifier),
                "challenge of " + verifier);

        String generated = Pkce.newCodeVerifier();
        Check.isTrue(generated.matches("[A-Za-z0-9_-]{43,128}"), "verifier " + generated);
        Check.isTrue(!generated.equals(Pkce.newCodeVerifier()), "two verifiers are equal");
    }

    @Test
    public void clientCredentialsTokenCallsApi() {
        OAuthClient oauth = oauth(clientSecret);
        OAuthToken token = oauth.clientCredentials(List.of("users:read"));
        Check.equal("users:read", token.scope(), "scope");
        Check.isTrue(token.refreshToken() == null, "no refresh token for client credentials");
        Check.isTrue(token.expiresIn() > 0, "expires_in " + token.expiresIn());

        FkodClient client = FkodClient.builder().baseUrl(baseUrl)
                .tokenProvider(oauth.clientCredentialsTokenProvider(List.of("users:read"))).build();
        client.users().list(new ListParams().limit(1));
        ApiException forbidden = Check.raises(ApiException.class,
                () -> client.users().create(new UserCreateParams("scope@sdk.example")));
        Check.equal(403, forbidden.status(), "a users:read token creating a user");

        OAuthException error = Check.raises(OAuthException.class,
                () -> oauth("wrong-secret").clientCredentials(null));
        Check.equal(401, error.status(), "status for a wrong secret");
        Check.equal("invalid_client", error.error(), "error for a wrong secret");
    }

    @Test
    public void authorizationCodeFlowWithRefreshAndRevoke() throws Exception {
        OAuthClient oauth = oauth(clientSecret);
        String verifier = Pkce.newCodeVerifier();
        String state = Pkce.newState();

        Map<String, String> redirect = approveInBrowser(
                oauth.authorizeUrl(state, Pkce.codeChallengeS256(verifier), List.of("users:read")));
        Check.equal(state, redirect.get("state"), "state of the redirect");

        OAuthToken token = oauth.exchangeCode(redirect.get("code"), verifier);
        Check.isTrue(token.accessToken() != null && token.refreshToken() != null, "tokens " + token);
        Check.equal("users:read", token.scope(), "scope");
        FkodClient client = FkodClient.builder().baseUrl(baseUrl).accessToken(token.accessToken()).build();
        client.users().list(new ListParams());

        OAuthToken refreshed = oauth.refresh(token.refreshToken(), null);
        Check.isTrue(refreshed.refreshToken() != null
                && !refreshed.refreshToken().equals(token.refreshToken()), "refresh token rotated");
        OAuthException reused = Check.raises(OAuthException.class,
                () -> oauth.refresh(token.refreshToken(), null));
        Check.equal("invalid_grant", reused.error(), "reusing a rotated refresh token");

        oauth.revoke(refreshed.accessToken());
        FkodClient revoked = FkodClient.builder().baseUrl(baseUrl).accessToken(refreshed.accessToken())
                .maxRetries(0).build();
        ApiException error = Check.raises(ApiException.class, () -> revoked.users().list(new ListParams()));
        Check.equal(401, error.status(), "status with a revoked token");

        OAuthException badCode = Check.raises(OAuthException.class,
                () -> oauth.exchangeCode("not-a-code", verifier));
        Check.equal("invalid_grant", badCode.error(), "an unknown code");
    }

    /**
     * Plays the user's part: opens the authorize URL, logs in as the partner's owner, allows
     * access, and returns the query parameters of the redirect to the application.
     */
    private Map<String, String> approveInBrowser(String authorizeUrl) throws Exception {
        CookieManager browser = new CookieManager();

        Map<String, String> login = new LinkedHashMap<>();
        login.put("action", "login");
        login.put("email", Check.requireEnv("FKOD_OWNER_EMAIL"));
        login.put("password", Check.requireEnv("FKOD_OWNER_PASSWORD"));
        Check.equal(303, submit(browser, authorizeUrl, login).statusCode(), "login status");

        HttpResponse<String> approval = submit(browser, authorizeUrl, new LinkedHashMap<>(Map.of("action", "approve")));
        Check.equal(302, approval.statusCode(), "approval status");
        String location = approval.headers().firstValue("Location").orElseThrow();
        Check.isTrue(location.startsWith(redirectUri + "?"), "redirect " + location);

        Map<String, String> query = new HashMap<>();
        for (String pair : URI.create(location).getRawQuery().split("&")) {
            String[] parts = pair.split("=", 2);
            query.put(URLDecoder.decode(parts[0], StandardCharsets.UTF_8),
                    URLDecoder.decode(parts[1], StandardCharsets.UTF_8));
        }
        return query;
    }

    /**
     * Returns a client that opens a new connection for its first request. The JDK client keeps
     * a connection after an HTTP/1.0 response without "Connection: close", such as the test
     * server sends, although the server closes it, and a POST sent on it fails.
     */
    private static HttpClient newBrowser(CookieManager cookies) {
        return HttpClient.newBuilder().cookieHandler(cookies)
                .followRedirects(HttpClient.Redirect.NEVER).build();
    }

    /** Opens the page at {@code url} and posts its form with {@code fields} and its CSRF token. */
    private static HttpResponse<String> submit(CookieManager cookies, String url, Map<String, String> fields)
            throws Exception {
        HttpResponse<String> page = newBrowser(cookies).send(HttpRequest.newBuilder(URI.create(url)).build(),
                HttpResponse.BodyHandlers.ofString());
        Matcher csrf = CSRF.matcher(page.body());
        Check.isTrue(csrf.find(), "no csrf_token on the authorize page (" + page.statusCode() + ")");
        fields.put("csrf_token", csrf.group(1).replace("&amp;", "&"));

        StringBuilder form = new StringBuilder();
        for (Map.Entry<String, String> field : fields.entrySet()) {
            if (form.length() > 0) {
                form.append('&');
            }
            form.append(URLEncoder.encode(field.getKey(), StandardCharsets.UTF_8)).append('=')
                    .append(URLEncoder.encode(field.getValue(), StandardCharsets.UTF_8));
        }
        return newBrowser(cookies).send(HttpRequest.newBuilder(URI.create(url))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .POST(HttpRequest.BodyPublishers.ofString(form.toString())).build(),
                HttpResponse.BodyHandlers.ofString());
    }
}
