package com.fkod.sdk;

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.Map;
import java.util.UUID;
import java.util.function.Consumer;

/**
 * A client of the F-KOD API, which it calls through the platform's gateway with an API key
 * or an OAuth access token. It is safe for concurrent use.
 *
 * <p>Calls that meet a 429, a 503 or a connection error are retried with exponential backoff
 * and full jitter, waiting the Retry-After of the response when there is one. A POST is
 * retried only with an Idempotency-Key, so the client generates one for every POST and
 * reuses it on each retry of that call.
 */
public final class FkodClient {
    /** Defaults of the builder's settings. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(30);
    public static final int DEFAULT_MAX_RETRIES = 3;
    public static final Duration DEFAULT_INITIAL_RETRY_DELAY = Duration.ofMillis(500);
    public static final Duration DEFAULT_MAX_RETRY_DELAY = Duration.ofSeconds(30);

    private static final SecureRandom RANDOM = new SecureRandom();

    private final URI baseUri;
    private final String apiKey;
    private final TokenProvider tokenProvider;
    private final HttpClient httpClient;
    private final Duration timeout;
    private final int maxRetries;
    private final Duration initialRetryDelay;
    private final Duration maxRetryDelay;
    private final String apiVersion;
    private final String userAgent;
    private final Consumer<Attempt> attemptListener;

    private final Users users;
    private final Courses courses;
    private final Mentors mentors;

    private FkodClient(Builder builder) {
        String base = builder.baseUrl != null ? builder.baseUrl : System.getenv("FKOD_BASE_URL");
        if (base == null || base.isEmpty()) {
            throw new IllegalArgumentException(
                    "no base URL: call Builder.baseUrl or set the FKOD_BASE_URL environment variable");
        }
        this.baseUri = parseBaseUri(base);

        String key = builder.apiKey;
        if (key == null && builder.tokenProvider == null) {
            key = System.getenv("FKOD_API_KEY");
        }
        if ((key == null || key.isEmpty()) && builder.tokenProvider == null) {
            throw new IllegalArgumentException("no credential: call Builder.apiKey, "
                    + "Builder.accessToken or Builder.tokenProvider, or set FKOD_API_KEY");
        }
        this.apiKey = key;
        this.tokenProvider = builder.tokenProvider;
        this.timeout = builder.timeout;
        this.httpClient = builder.httpClient != null ? builder.httpClient
                : HttpClient.newBuilder().connectTimeout(builder.timeout).build();
        this.maxRetries = builder.maxRetries;
        this.initialRetryDelay = builder.initialRetryDelay;
        this.maxRetryDelay = builder.maxRetryDelay;
        this.apiVersion = builder.apiVersion;
        this.userAgent = "fkod-java/" + Version.SDK + " (Java " + System.getProperty("java.version")
                + "; " + System.getProperty("os.name") + ")"
                + (builder.userAgent != null ? " " + builder.userAgent : "");
        this.attemptListener = builder.attemptListener;

        this.users = new Users(this);
        this.courses = new Courses(this);
        this.mentors = new Mentors(this);
    }

    /** Starts the configuration of a client. */
    public static Builder builder() {
        return new Builder();
    }

    public Users users() {
        return users;
    }

    public Courses courses() {
        return courses;
    }

    public Mentors mentors() {
        return mentors;
    }

    /** Returns the User-Agent header value the client sends. */
    public String userAgent() {
        return userAgent;
    }

    /** Returns a random version 4 UUID, the form of the Idempotency-Key values the SDK generates. */
    public static String newIdempotencyKey() {
        return UUID.randomUUID().toString();
    }

    private static URI parseBaseUri(String base) {
        String trimmed = base.replaceAll("/+$", "");
        URI uri;
        try {
            uri = URI.create(trimmed);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("invalid base URL " + base + ": " + e.getMessage(), e);
        }
        if (!("http".equals(uri.getScheme()) || "https".equals(uri.getScheme()))
                || uri.getHost() == null) {
            throw new IllegalArgumentException(
                    "invalid base URL " + base + ": expected an absolute http or https URL");
        }
        return uri;
    }

    static String pathSegment(String value) {
        return URLEncoder.encode(value, StandardCharsets.UTF_8).replace("+", "%20");
    }

    /** Sends one logical call, with its retries, and returns the parsed JSON body of the 2xx response. */
    Object request(String method, String path, Map<String, String> query, Object body,
                   RequestOptions options) {
        String payload = body == null ? null : Json.write(body);

        // One key per logical call, reused on every retry, so the platform replays the stored
        // response instead of running the operation again.
        String idempotencyKey = null;
        if ("POST".equals(method) && !options.noIdempotencyKey()) {
            idempotencyKey = options.idempotencyKey() != null ? options.idempotencyKey()
                    : newIdempotencyKey();
        }
        boolean retryable = !"POST".equals(method) || idempotencyKey != null;
        int retries = options.maxRetries() != null ? options.maxRetries() : maxRetries;
        URI uri = URI.create(baseUri + path + encodeQuery(query));

        for (int attempt = 0; ; attempt++) {
            HttpRequest request = buildRequest(method, uri, payload, idempotencyKey, options);
            HttpResponse<String> response;
            try {
                response = httpClient.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
            } catch (IOException e) {
                report(new Attempt(method, uri, attempt, -1, request.headers(), e));
                if (!retryable || attempt >= retries) {
                    throw new ConnectionException(method + " " + uri + " failed: " + e, e);
                }
                pause(backoff(attempt));
                continue;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new ConnectionException(method + " " + uri + " was interrupted", e);
            }
            report(new Attempt(method, uri, attempt, response.statusCode(), request.headers(), null));

            int status = response.statusCode();
            if (status >= 200 && status < 300) {
                String text = response.body();
                return text == null || text.isEmpty() ? null : Json.parse(text);
            }
            ApiException error = ApiException.fromResponse(status, response.headers(), response.body());
            if (!retryable || attempt >= retries || !error.isRetryable()) {
                throw error;
            }
            Duration delay = error.retryAfter().isZero() ? backoff(attempt) : error.retryAfter();
            if (delay.compareTo(maxRetryDelay) > 0) {
                throw error;
            }
            pause(delay);
        }
    }

    private HttpRequest buildRequest(String method, URI uri, String payload, String idempotencyKey,
                                     RequestOptions options) {
        HttpRequest.Builder builder = HttpRequest.newBuilder(uri)
                .timeout(timeout)
                .header("Authorization", "Bearer " + credential())
                .header("Accept", "application/json")
                .header("User-Agent", userAgent);
        String version = options.apiVersion() != null ? options.apiVersion() : apiVersion;
        if (version != null) {
            builder.header("FKOD-Version", version);
        }
        if (idempotencyKey != null) {
            builder.header("Idempotency-Key", idempotencyKey);
        }
        options.headers().forEach(builder::header);
        if (payload == null) {
            builder.method(method, HttpRequest.BodyPublishers.noBody());
        } else {
            builder.header("Content-Type", "application/json");
            builder.method(method, HttpRequest.BodyPublishers.ofString(payload, StandardCharsets.UTF_8));
        }
        return builder.build();
    }

    private String credential() {
        return tokenProvider != null ? tokenProvider.token() : apiKey;
    }

    private static String encodeQuery(Map<String, String> query) {
        if (query == null || query.isEmpty()) {
            return "";
        }
        StringBuilder text = new StringBuilder("?");
        for (Map.Entry<String, String> entry : query.entrySet()) {
            if (text.length() > 1) {
                text.append('&');
            }
            text.append(URLEncoder.encode(entry.getKey(), StandardCharsets.UTF_8)).append('=')
                    .append(URLEncoder.encode(entry.getValue(), StandardCharsets.UTF_8));
        }
        return text.toString();
    }

    /** Returns a random delay below min(max delay, initial * 2^attempt): full jitter. */
    private Duration backoff(int attempt) {
        long ceiling = initialRetryDelay.toMillis() << Math.min(attempt, 20);
        ceiling = Math.min(ceiling, maxRetryDelay.toMillis());
        return Duration.ofMillis(ceiling <= 0 ? 0 : (long) (RANDOM.nextDouble() * ceiling));
    }

    private static void pause(Duration delay) {
        try {
            Thread.sleep(delay.toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new FkodException("interrupted while waiting to retry", e);
        }
    }

    private void report(Attempt attempt) {
        if (attemptListener != null) {
            attemptListener.accept(attempt);
        }
    }

    /** The settings of a {@link FkodClient}; the base URL and one credential are required. */
    public static final class Builder {
        private String baseUrl;
        private String apiKey;
        private TokenProvider tokenProvider;
        private HttpClient httpClient;
        private Duration timeout = DEFAULT_TIMEOUT;
        private int maxRetries = DEFAULT_MAX_RETRIES;
        private Duration initialRetryDelay = DEFAULT_INITIAL_RETRY_DELAY;
        private Duration maxRetryDelay = DEFAULT_MAX_RETRY_DELAY;
        private String apiVersion = Version.API;
        private String userAgent;
        private Consumer<Attempt> attemptListener;

        private Builder() {
        }

        /** Sets the platform's address, read from FKOD_BASE_URL when not set. There is no default host. */
        public Builder baseUrl(String baseUrl) {
            this.baseUrl = baseUrl;
            return this;
        }

        /** Sets an sk_live_ or sk_test_ key, read from FKOD_API_KEY when no credential is set. */
        public Builder apiKey(String apiKey) {
            this.apiKey = apiKey;
            return this;
        }

        /** Sets an OAuth 2.0 access token, used in place of an API key. */
        public Builder accessToken(String accessToken) {
            this.tokenProvider = () -> accessToken;
            return this;
        }

        /** Sets a supplier of an access token for each request, used in place of an API key. */
        public Builder tokenProvider(TokenProvider tokenProvider) {
            this.tokenProvider = tokenProvider;
            return this;
        }

        /** Sets the HTTP client that sends requests, whose own connect timeout then applies. */
        public Builder httpClient(HttpClient httpClient) {
            this.httpClient = httpClient;
            return this;
        }

        /** Sets the timeout of the connection and of each attempt's response (default 30 s). */
        public Builder timeout(Duration timeout) {
            this.timeout = timeout;
            return this;
        }

        /** Sets the number of retries after the first attempt (default 3); 0 makes no retry. */
        public Builder maxRetries(int maxRetries) {
            this.maxRetries = maxRetries;
            return this;
        }

        /** Sets the backoff ceiling before the first retry (default 500 ms), which doubles per retry. */
        public Builder initialRetryDelay(Duration delay) {
            this.initialRetryDelay = delay;
            return this;
        }

        /**
         * Sets the cap of every wait between attempts (default 30 s). A Retry-After longer than
         * this ends the retries and throws the error at once.
         */
        public Builder maxRetryDelay(Duration delay) {
            this.maxRetryDelay = delay;
            return this;
        }

        /** Sets the FKOD-Version header value (default {@link Version#API}); null sends no header. */
        public Builder apiVersion(String apiVersion) {
            this.apiVersion = apiVersion;
            return this;
        }

        /** Sets a product token appended to the SDK's User-Agent, to name your application. */
        public Builder userAgent(String userAgent) {
            this.userAgent = userAgent;
            return this;
        }

        /** Sets a listener that receives every HTTP attempt after it ends, for logging or metrics. */
        public Builder attemptListener(Consumer<Attempt> listener) {
            this.attemptListener = listener;
            return this;
        }

        public FkodClient build() {
            return new FkodClient(this);
        }
    }
}
