package com.fkod.sdk;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;

/** The typed methods, errors, retries and pagination against a live server. */
public class LiveApiTest {
    private final String baseUrl = Check.requireEnv("FKOD_BASE_URL");
    private final List<Attempt> attempts = Collections.synchronizedList(new ArrayList<>());

    private FkodClient.Builder client() {
        return FkodClient.builder().baseUrl(baseUrl).apiKey(Check.requireEnv("FKOD_API_KEY"))
                .timeout(Duration.ofSeconds(10)).attemptListener(attempts::add);
    }

    private static String uniqueEmail(String prefix) {
        return prefix + "-" + UUID.randomUUID().toString().substring(0, 8) + "@sdk.example";
    }

    @Test
    public void userCreateGetUpdate() {
        FkodClient client = client().build();
        String email = uniqueEmail("grace");

        User created = client.users().create(new UserCreateParams(email).name("Grace")
                .archetype("explorer"));
        Check.isTrue(created.id().startsWith("user_"), "id " + created.id());
        Check.equal(email, created.email(), "email");
        Check.equal("Grace", created.name(), "name");
        Check.equal("explorer", created.archetype(), "archetype");
        Check.isTrue(created.createdAt() != null, "created_at is parsed");

        User fetched = client.users().get(created.id());
        Check.equal(created, fetched, "fetched user");

        User updated = client.users().update(created.id(), new UserUpdateParams().name("Grace Hopper"));
        Check.equal("Grace Hopper", updated.name(), "updated name");
        Check.equal("explorer", updated.archetype(), "archetype after update");

        User cleared = client.users().update(created.id(), new UserUpdateParams().archetype(null));
        Check.isTrue(cleared.archetype() == null, "archetype cleared with null: " + cleared);

        Attempt post = attempts.get(0);
        Check.equal("POST", post.method(), "first request");
        Check.isTrue(post.requestHeaders().firstValue("Idempotency-Key").isPresent(),
                "a POST carries a generated Idempotency-Key");
        Check.equal(Version.API, post.requestHeaders().firstValue("FKOD-Version").orElse(null),
                "FKOD-Version");
        Check.isTrue(post.requestHeaders().firstValue("User-Agent").orElse("")
                .startsWith("fkod-java/" + Version.SDK), "User-Agent");
    }

    @Test
    public void listAllFollowsCursor() {
        FkodClient client = client().build();
        Set<String> created = new HashSet<>();
        for (int i = 0; i < 5; i++) {
            created.add(client.users().create(new UserCreateParams(uniqueEmail("page"))).id());
        }
        attempts.clear();

        Set<String> seen = new HashSet<>();
        for (User user : client.users().listAll(new ListParams().limit(2))) {
            Check.isTrue(seen.add(user.id()), "user returned twice: " + user.id());
        }

        Check.isTrue(seen.containsAll(created), "every created user is listed: " + seen);
        Check.isTrue(attempts.size() >= 3, attempts.size() + " pages fetched for 5 users at 2 a page");
        Check.isTrue(!attempts.get(0).uri().getQuery().contains("cursor="), "first page has no cursor");
        Check.isTrue(attempts.get(1).uri().getQuery().contains("cursor="), "second page has a cursor");
        Check.isTrue(attempts.get(1).uri().getQuery().contains("limit=2"), "second page keeps the limit");

        Page<User> page = client.users().list(new ListParams().limit(2));
        Check.equal(2, page.data().size(), "page size");
        Check.isTrue(page.hasMore() && page.nextCursor() != null, "first page has more");

        Page<User> byEmail = client.users().list(new ListParams().email(page.data().get(0).email()));
        Check.equal(List.of(page.data().get(0)), byEmail.data(), "email filter");
    }

    @Test
    public void validationErrorNamesField() {
        ApiException error = Check.raises(ApiException.class,
                () -> client().build().users().create(new UserCreateParams("not-an-email")));

        Check.equal(400, error.status(), "status");
        Check.isTrue(error.code() != null && error.errorMessage() != null, "code and message");
        FieldError field = error.fieldError("email").orElseThrow(
                () -> new AssertionError("no field error names email: " + error.fieldErrors()));
        Check.equal("body", field.location(), "location");
        Check.isTrue(!field.description().isEmpty(), "description");
        Check.isTrue(error.requestId() != null && !error.requestId().isEmpty(), "request id");
        Check.isTrue(error.getMessage().contains("email"), "message names the field: " + error.getMessage());
    }

    @Test
    public void unknownUserIsNotFound() {
        ApiException error = Check.raises(ApiException.class,
                () -> client().build().users().get("user_987654321"));
        Check.equal(404, error.status(), "status");
        Check.equal("not_found", error.code(), "code");
        Check.isTrue(error.requestId() != null, "request id");
    }

    @Test
    public void invalidKeyIsUnauthorized() {
        FkodClient client = client().apiKey("sk_test_notarealkey0000000000").build();
        ApiException error = Check.raises(ApiException.class,
                () -> client.users().list(new ListParams()));
        Check.equal(401, error.status(), "status");
        Check.equal(1, attempts.size(), "a 401 is not retried");
    }

    @Test
    public void idempotencyKeyReturnsSameUser() {
        FkodClient client = client().build();
        String key = FkodClient.newIdempotencyKey();
        UserCreateParams params = new UserCreateParams(uniqueEmail("idem"));

        User first = client.users().create(params, new RequestOptions().idempotencyKey(key));
        User second = client.users().create(params, new RequestOptions().idempotencyKey(key));
        Check.equal(first.id(), second.id(), "user id of the replayed POST");

        ApiException error = Check.raises(ApiException.class, () -> client.users().create(
                new UserCreateParams(uniqueEmail("other")), new RequestOptions().idempotencyKey(key)));
        Check.equal(422, error.status(), "status for a reused key");
        Check.equal("idempotency_key_reused", error.code(), "code for a reused key");
    }

    /** Creates a test-mode key that admits one call per {@code windowSeconds}. */
    private String createRateLimitedKey(int windowSeconds) throws IOException, InterruptedException {
        String body = Json.write(Map.of("key_name", "java sdk rate limit", "scopes", List.of("users:read"),
                "mode", "test", "rate_limit", 1, "rate_limit_window", windowSeconds));
        HttpRequest request = HttpRequest.newBuilder(URI.create(baseUrl + "/api/partners/api-keys"))
                .header("Authorization", "Bearer " + Check.requireEnv("FKOD_LOGIN_TOKEN"))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body)).build();
        HttpResponse<String> response = HttpClient.newHttpClient().send(request,
                HttpResponse.BodyHandlers.ofString());
        Check.equal(201, response.statusCode(), "creating a rate-limited key: " + response.body());
        return (String) Json.parseObject(response.body()).get("key");
    }

    @Test
    public void retryAfterIsHonoured() throws Exception {
        String key = createRateLimitedKey(2);
        FkodClient client = client().apiKey(key).maxRetryDelay(Duration.ofSeconds(5)).build();

        client.users().list(new ListParams().limit(1));
        long started = System.nanoTime();
        client.users().list(new ListParams().limit(1));
        long waitedMillis = (System.nanoTime() - started) / 1_000_000;

        List<Integer> statuses = attempts.stream().map(Attempt::status).toList();
        Check.isTrue(statuses.size() >= 3 && statuses.get(1) == 429
                && statuses.get(statuses.size() - 1) == 200,
                "statuses " + statuses + ", expected 200, then 429, then a retried 200");
        Check.isTrue(waitedMillis >= 900, "retried after " + waitedMillis + " ms, before Retry-After");

        FkodClient noRetry = client().apiKey(key).maxRetries(0).build();
        ApiException error = Check.raises(ApiException.class,
                () -> noRetry.users().list(new ListParams().limit(1)));
        Check.equal(429, error.status(), "status without retries");
        Check.equal("rate_limited", error.code(), "code");
        Check.isTrue(!error.retryAfter().isZero()
                && error.retryAfter().compareTo(Duration.ofSeconds(2)) <= 0,
                "Retry-After " + error.retryAfter());
        RateLimit limit = error.rateLimit().orElseThrow(() -> new AssertionError("no rate-limit headers"));
        Check.equal(1L, limit.limit(), "X-RateLimit-Limit");
        Check.equal(0L, limit.remaining(), "X-RateLimit-Remaining");
    }

    @Test
    public void retryAfterAboveCapIsNotAwaited() throws Exception {
        String key = createRateLimitedKey(3600);
        // The cap is far above a request's time on a loaded machine, so a client
        // that slept for the cap before giving up cannot pass for one that did not.
        FkodClient client = client().apiKey(key).maxRetryDelay(Duration.ofSeconds(10)).build();
        client.users().list(new ListParams().limit(1));

        long started = System.nanoTime();
        ApiException error = Check.raises(ApiException.class,
                () -> client.users().list(new ListParams().limit(1)));
        long elapsedMillis = (System.nanoTime() - started) / 1_000_000;

        Check.equal(429, error.status(), "status");
        Check.isTrue(error.retryAfter().getSeconds() > 10, "Retry-After " + error.retryAfter());
        Check.isTrue(elapsedMillis < 5000, "waited " + elapsedMillis + " ms for a Retry-After above the cap");
        Check.equal(2, attempts.size(), "requests sent");
    }

    @Test
    public void connectionErrorIsRetried() throws IOException {
        int port;
        try (ServerSocket socket = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = socket.getLocalPort();
        }
        FkodClient client = FkodClient.builder().baseUrl("http://127.0.0.1:" + port)
                .apiKey("sk_test_unused").maxRetries(2).initialRetryDelay(Duration.ofMillis(10))
                .attemptListener(attempts::add).build();

        Check.raises(ConnectionException.class, () -> client.users().get("user_1"));
        Check.equal(3, attempts.size(), "attempts of a GET with 2 retries");
        Check.isTrue(attempts.get(0).error() != null && attempts.get(0).status() == -1,
                "a failed attempt has no status");

        Check.raises(ConnectionException.class, () -> client.users().create(
                new UserCreateParams("a@b.example"), new RequestOptions().withoutIdempotencyKey()));
        Check.equal(4, attempts.size(), "a POST without an Idempotency-Key is sent once");
    }

    @Test
    public void coursesAndMentors() {
        FkodClient client = client().build();
        User user = client.users().create(new UserCreateParams(uniqueEmail("learner")));

        Course course = client.courses().create(new CourseCreateParams("Java for partners")
                .level("intermediate").description("Records and \u00e9t\u00e9 \ud83d\ude00"));
        Check.equal("partner", course.owner(), "owner");
        Check.equal("Records and \u00e9t\u00e9 \ud83d\ude00", course.description(),
                "non-ASCII description round trip");

        Completion completion = client.courses().complete(course.id(), user.id());
        Check.equal(course.id(), completion.courseId(), "completion course");
        Check.equal(user.id(), completion.userId(), "completion user");

        boolean found = false;
        for (Course item : client.courses().listAll(new ListParams().limit(50))) {
            found |= item.id().equals(course.id());
        }
        Check.isTrue(found, "the new course is listed");

        Page<Mentor> mentors = client.mentors().list(new ListParams().limit(5));
        Check.isTrue(!mentors.data().isEmpty(), "the test-mode mentor catalog is not empty");
        Mentor mentor = mentors.data().get(0);
        Match match = client.mentors().match(mentor.id(), user.id(), "wants to learn Java");
        Check.equal(mentor.id(), match.mentorId(), "match mentor");
        Check.equal(user.id(), match.userId(), "match user");
        Check.equal("wants to learn Java", match.note(), "match note");
    }
}
