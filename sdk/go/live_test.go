package fkod_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	fkod "github.com/fkod/fkod-go"
)

// The tests in this file call a live F-KOD server. tests/sdk/test_go_sdk.py starts one and
// sets FKOD_BASE_URL, FKOD_API_KEY, FKOD_LOGIN_TOKEN and the other variables read here.

func requireLive(t *testing.T) {
	t.Helper()
	if os.Getenv("FKOD_BASE_URL") == "" {
		t.Skip("FKOD_BASE_URL is not set; run tests/sdk/test_go_sdk.py to test against a live server")
	}
}

// recordingTransport counts the requests a client sends and keeps their statuses, so tests
// can see the retries and page fetches behind one SDK call.
type recordingTransport struct {
	mu       sync.Mutex
	requests []*http.Request
	statuses []int
}

func (r *recordingTransport) RoundTrip(request *http.Request) (*http.Response, error) {
	response, err := http.DefaultTransport.RoundTrip(request)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, request)
	if err == nil {
		r.statuses = append(r.statuses, response.StatusCode)
	}
	return response, err
}

func (r *recordingTransport) snapshot() ([]*http.Request, []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.requests...), append([]int(nil), r.statuses...)
}

func newLiveClient(t *testing.T, config fkod.Config) (*fkod.Client, *recordingTransport) {
	t.Helper()
	recorder := &recordingTransport{}
	config.HTTPClient = &http.Client{Transport: recorder, Timeout: 10 * time.Second}
	client, err := fkod.NewClient(config)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return client, recorder
}

func uniqueEmail(prefix string) string {
	return fmt.Sprintf("%s-%s@sdk.example", prefix, fkod.NewIdempotencyKey()[:8])
}

func asAPIError(t *testing.T, err error) *fkod.APIError {
	t.Helper()
	var apiErr *fkod.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("expected *fkod.APIError, got %T: %v", err, err)
	}
	return apiErr
}

func TestUserCreateGetUpdate(t *testing.T) {
	requireLive(t)
	client, recorder := newLiveClient(t, fkod.Config{})
	ctx := context.Background()
	email := uniqueEmail("ada")

	created, err := client.Users.Create(ctx, fkod.UserCreateParams{
		Email: email, Name: fkod.String("Ada"), Archetype: fkod.String("builder")})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !strings.HasPrefix(created.ID, "user_") {
		t.Errorf("created id = %q, expected a user_ id", created.ID)
	}
	if created.Email != email || created.Name != "Ada" || created.Archetype != "builder" {
		t.Errorf("created user = %+v", created)
	}
	if created.CreatedAt.IsZero() {
		t.Errorf("created_at was not parsed")
	}

	fetched, err := client.Users.Get(ctx, created.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if fetched.ID != created.ID || fetched.Email != email {
		t.Errorf("fetched user = %+v, expected %+v", fetched, created)
	}

	updated, err := client.Users.Update(ctx, created.ID, fkod.UserUpdateParams{
		Name: fkod.String("Ada Lovelace")})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if updated.Name != "Ada Lovelace" || updated.Archetype != "builder" {
		t.Errorf("updated user = %+v", updated)
	}

	requests, _ := recorder.snapshot()
	first := requests[0]
	if got := first.Header.Get("User-Agent"); !strings.HasPrefix(got, "fkod-go/"+fkod.Version) {
		t.Errorf("User-Agent = %q", got)
	}
	if got := first.Header.Get("FKOD-Version"); got != fkod.APIVersion {
		t.Errorf("FKOD-Version = %q, expected %q", got, fkod.APIVersion)
	}
	if first.Header.Get("Idempotency-Key") == "" {
		t.Errorf("the POST was sent without an Idempotency-Key")
	}
}

func TestUsersIterFollowsCursor(t *testing.T) {
	requireLive(t)
	client, recorder := newLiveClient(t, fkod.Config{})
	ctx := context.Background()

	created := map[string]bool{}
	for i := 0; i < 5; i++ {
		user, err := client.Users.Create(ctx, fkod.UserCreateParams{Email: uniqueEmail("page")})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		created[user.ID] = true
	}
	before, _ := recorder.snapshot()

	seen := map[string]bool{}
	it := client.Users.Iter(ctx, fkod.UserListParams{Limit: 2})
	for it.Next() {
		user := it.Current()
		if seen[user.ID] {
			t.Errorf("user %s returned twice", user.ID)
		}
		seen[user.ID] = true
	}
	if err := it.Err(); err != nil {
		t.Fatalf("Iter: %v", err)
	}
	for id := range created {
		if !seen[id] {
			t.Errorf("user %s was not returned by the iterator", id)
		}
	}

	after, _ := recorder.snapshot()
	pages := after[len(before):]
	if len(pages) < 3 {
		t.Fatalf("the iterator fetched %d pages of 2 for at least 5 users", len(pages))
	}
	if pages[0].URL.Query().Get("cursor") != "" {
		t.Errorf("the first page was fetched with a cursor")
	}
	if pages[1].URL.Query().Get("cursor") == "" {
		t.Errorf("the second page was fetched without a cursor")
	}
	if pages[1].URL.Query().Get("limit") != "2" {
		t.Errorf("limit = %q on the second page", pages[1].URL.Query().Get("limit"))
	}

	page, err := client.Users.List(ctx, fkod.UserListParams{Limit: 2})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(page.Data) != 2 || !page.HasMore || page.NextCursor == "" {
		t.Errorf("first page = %d users, has_more %v, next_cursor %q", len(page.Data),
			page.HasMore, page.NextCursor)
	}
}

func TestValidationErrorNamesField(t *testing.T) {
	requireLive(t)
	client, _ := newLiveClient(t, fkod.Config{})

	_, err := client.Users.Create(context.Background(), fkod.UserCreateParams{
		Email: "not-an-email"})

	apiErr := asAPIError(t, err)
	if apiErr.Status != 400 {
		t.Errorf("status = %d, expected 400", apiErr.Status)
	}
	if apiErr.Code == "" || apiErr.Message == "" {
		t.Errorf("code %q or message %q is empty", apiErr.Code, apiErr.Message)
	}
	field := apiErr.FieldError("email")
	if field == nil {
		t.Fatalf("no field error names email: %+v", apiErr.Errors)
	}
	if field.Location != "body" || field.Description == "" {
		t.Errorf("field error = %+v", field)
	}
	if apiErr.RequestID == "" {
		t.Errorf("the error has no request id")
	}
	if !strings.Contains(apiErr.Error(), "email") {
		t.Errorf("Error() = %q does not name the field", apiErr.Error())
	}
}

func TestUnknownUserIsNotFound(t *testing.T) {
	requireLive(t)
	client, _ := newLiveClient(t, fkod.Config{})

	_, err := client.Users.Get(context.Background(), "user_987654321")

	apiErr := asAPIError(t, err)
	if apiErr.Status != 404 || apiErr.Code != "not_found" {
		t.Errorf("status %d code %q, expected 404 not_found", apiErr.Status, apiErr.Code)
	}
	if apiErr.RequestID == "" {
		t.Errorf("the error has no request id")
	}
}

func TestInvalidKeyIsUnauthorized(t *testing.T) {
	requireLive(t)
	client, recorder := newLiveClient(t, fkod.Config{APIKey: "sk_test_notarealkey0000000000"})

	_, err := client.Users.List(context.Background(), fkod.UserListParams{})

	apiErr := asAPIError(t, err)
	if apiErr.Status != 401 {
		t.Errorf("status = %d, expected 401", apiErr.Status)
	}
	if requests, _ := recorder.snapshot(); len(requests) != 1 {
		t.Errorf("a 401 was sent %d times; it must not be retried", len(requests))
	}
}

func TestIdempotencyKeyReturnsSameUser(t *testing.T) {
	requireLive(t)
	client, _ := newLiveClient(t, fkod.Config{})
	ctx := context.Background()
	key := fkod.NewIdempotencyKey()
	params := fkod.UserCreateParams{Email: uniqueEmail("idem")}

	first, err := client.Users.Create(ctx, params, fkod.WithIdempotencyKey(key))
	if err != nil {
		t.Fatalf("first Create: %v", err)
	}
	second, err := client.Users.Create(ctx, params, fkod.WithIdempotencyKey(key))
	if err != nil {
		t.Fatalf("second Create: %v", err)
	}
	if first.ID != second.ID {
		t.Errorf("the same Idempotency-Key created %s and %s", first.ID, second.ID)
	}

	_, err = client.Users.Create(ctx, fkod.UserCreateParams{Email: uniqueEmail("other")},
		fkod.WithIdempotencyKey(key))
	apiErr := asAPIError(t, err)
	if apiErr.Status != 422 || apiErr.Code != "idempotency_key_reused" {
		t.Errorf("reusing the key for another body: %d %q", apiErr.Status, apiErr.Code)
	}
}

// createRateLimitedKey creates a test-mode key that admits one call per window seconds.
func createRateLimitedKey(t *testing.T, window int) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"key_name": "go sdk rate limit", "scopes": []string{"users:read"}, "mode": "test",
		"rate_limit": 1, "rate_limit_window": window})
	request, _ := http.NewRequest(http.MethodPost,
		os.Getenv("FKOD_BASE_URL")+"/api/partners/api-keys", bytes.NewReader(body))
	request.Header.Set("Authorization", "Bearer "+os.Getenv("FKOD_LOGIN_TOKEN"))
	request.Header.Set("Content-Type", "application/json")
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		t.Fatalf("creating a rate-limited key: %v", err)
	}
	defer response.Body.Close()
	raw, _ := io.ReadAll(response.Body)
	if response.StatusCode != 201 {
		t.Fatalf("creating a rate-limited key: %d %s", response.StatusCode, raw)
	}
	var created struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(raw, &created); err != nil || created.Key == "" {
		t.Fatalf("creating a rate-limited key: %s", raw)
	}
	return created.Key
}

func TestRetryAfterIsHonoured(t *testing.T) {
	requireLive(t)
	key := createRateLimitedKey(t, 2)
	client, recorder := newLiveClient(t, fkod.Config{APIKey: key, MaxRetryDelay: 5 * time.Second})
	ctx := context.Background()

	if _, err := client.Users.List(ctx, fkod.UserListParams{Limit: 1}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	started := time.Now()
	if _, err := client.Users.List(ctx, fkod.UserListParams{Limit: 1}); err != nil {
		t.Fatalf("second call, which should wait and retry: %v", err)
	}
	waited := time.Since(started)

	_, statuses := recorder.snapshot()
	if len(statuses) < 3 || statuses[1] != 429 || statuses[len(statuses)-1] != 200 {
		t.Fatalf("statuses = %v, expected 200, then 429, then a retried 200", statuses)
	}
	if waited < 900*time.Millisecond {
		t.Errorf("the retry came after %v, before the Retry-After of at least 1 s", waited)
	}

	// Without retries the 429 reaches the caller with its Retry-After.
	noRetry, _ := newLiveClient(t, fkod.Config{APIKey: key, DisableRetries: true})
	_, err := noRetry.Users.List(ctx, fkod.UserListParams{Limit: 1})
	apiErr := asAPIError(t, err)
	if apiErr.Status != 429 || apiErr.Code != "rate_limited" {
		t.Fatalf("status %d code %q, expected 429 rate_limited", apiErr.Status, apiErr.Code)
	}
	if apiErr.RetryAfter <= 0 || apiErr.RetryAfter > 2*time.Second {
		t.Errorf("RetryAfter = %v, expected 1 to 2 s", apiErr.RetryAfter)
	}
	if apiErr.RateLimit == nil || apiErr.RateLimit.Limit != 1 || apiErr.RateLimit.Remaining != 0 {
		t.Errorf("RateLimit = %+v, expected limit 1 and none remaining", apiErr.RateLimit)
	}
}

func TestRetryAfterAboveCapIsNotAwaited(t *testing.T) {
	requireLive(t)
	key := createRateLimitedKey(t, 3600)
	// The cap is far above a request's time on a loaded machine, so a client
	// that slept for the cap before giving up cannot pass for one that did not.
	client, recorder := newLiveClient(t, fkod.Config{APIKey: key, MaxRetryDelay: 10 * time.Second})
	ctx := context.Background()

	if _, err := client.Users.List(ctx, fkod.UserListParams{Limit: 1}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	started := time.Now()
	_, err := client.Users.List(ctx, fkod.UserListParams{Limit: 1})

	apiErr := asAPIError(t, err)
	if apiErr.Status != 429 || apiErr.RetryAfter <= 10*time.Second {
		t.Errorf("status %d Retry-After %v, expected 429 with more than 10 s", apiErr.Status,
			apiErr.RetryAfter)
	}
	if elapsed := time.Since(started); elapsed > 5*time.Second {
		t.Errorf("the client waited %v for a Retry-After above its cap", elapsed)
	}
	if requests, _ := recorder.snapshot(); len(requests) != 2 {
		t.Errorf("%d requests sent, expected the first call and one rejected call", len(requests))
	}
}

func TestConnectionErrorIsRetried(t *testing.T) {
	requireLive(t)
	// A port that was just free on loopback; nothing listens on it any more.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close()

	client, recorder := newLiveClient(t, fkod.Config{BaseURL: "http://" + address,
		APIKey: "sk_test_unused", MaxRetries: 2, InitialRetryDelay: 10 * time.Millisecond})
	_, err = client.Users.Get(context.Background(), "user_1")

	var connErr *fkod.ConnectionError
	if !errors.As(err, &connErr) {
		t.Fatalf("expected *fkod.ConnectionError, got %T: %v", err, err)
	}
	if requests, _ := recorder.snapshot(); len(requests) != 3 {
		t.Errorf("%d attempts, expected 1 and 2 retries", len(requests))
	}

	// A POST without an Idempotency-Key is never retried.
	_, err = client.Users.Create(context.Background(), fkod.UserCreateParams{Email: "a@b.example"},
		fkod.WithoutIdempotencyKey())
	if !errors.As(err, &connErr) {
		t.Fatalf("expected *fkod.ConnectionError, got %T: %v", err, err)
	}
	if requests, _ := recorder.snapshot(); len(requests) != 4 {
		t.Errorf("%d attempts in all, expected the POST to be sent once", len(requests))
	}
}

func TestCoursesAndMentors(t *testing.T) {
	requireLive(t)
	client, _ := newLiveClient(t, fkod.Config{})
	ctx := context.Background()

	user, err := client.Users.Create(ctx, fkod.UserCreateParams{Email: uniqueEmail("learner")})
	if err != nil {
		t.Fatalf("creating a user: %v", err)
	}
	course, err := client.Courses.Create(ctx, fkod.CourseCreateParams{Title: "Go for partners",
		Level: fkod.String("beginner")})
	if err != nil {
		t.Fatalf("Courses.Create: %v", err)
	}
	if course.Owner != "partner" || course.Level != "beginner" {
		t.Errorf("course = %+v", course)
	}

	completion, err := client.Courses.Complete(ctx, course.ID, user.ID)
	if err != nil {
		t.Fatalf("Courses.Complete: %v", err)
	}
	if completion.CourseID != course.ID || completion.UserID != user.ID {
		t.Errorf("completion = %+v", completion)
	}

	found := false
	courses := client.Courses.Iter(ctx, fkod.ListParams{Limit: 50})
	for courses.Next() {
		found = found || courses.Current().ID == course.ID
	}
	if err := courses.Err(); err != nil || !found {
		t.Errorf("Courses.Iter: found %v, error %v", found, err)
	}

	mentors, err := client.Mentors.List(ctx, fkod.ListParams{Limit: 5})
	if err != nil {
		t.Fatalf("Mentors.List: %v", err)
	}
	if len(mentors.Data) == 0 {
		t.Fatalf("the test-mode mentor catalog is empty")
	}
	mentor := mentors.Data[0]
	match, err := client.Mentors.Match(ctx, mentor.ID, fkod.MentorMatchParams{UserID: user.ID,
		Note: fkod.String("wants to learn Go")})
	if err != nil {
		t.Fatalf("Mentors.Match: %v", err)
	}
	if match.MentorID != mentor.ID || match.UserID != user.ID || match.Note != "wants to learn Go" {
		t.Errorf("match = %+v", match)
	}
}
