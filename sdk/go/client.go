// Package fkod is a client for the F-KOD Partner Platform API.
//
// A Client calls the F-KOD API through the platform's gateway with an API key or an OAuth
// access token. It retries calls that met a rate limit, a 503 or a connection error, and
// sends an Idempotency-Key with every POST so that those retries are safe. VerifyWebhook
// checks the signatures of webhook deliveries, and OAuthClient runs the OAuth 2.0 flows of
// a server-side application.
package fkod

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"
)

// Default values of Config fields left at zero.
const (
	DefaultTimeout       = 30 * time.Second
	DefaultMaxRetries    = 3
	DefaultInitialDelay  = 500 * time.Millisecond
	DefaultMaxRetryDelay = 30 * time.Second
)

// maxResponseBytes limits how much of a response body is read, so that a misbehaving proxy
// cannot make the client buffer an unbounded body.
const maxResponseBytes = 16 << 20

// TokenSource supplies an OAuth access token for each request, so a token can be renewed
// while the client is in use. ClientCredentialsTokenSource is one implementation.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// Config configures a Client. BaseURL and one credential are required.
type Config struct {
	// BaseURL is the platform's address, such as "https://partners.example". When empty,
	// the FKOD_BASE_URL environment variable is used. The SDK has no default host.
	BaseURL string

	// APIKey is an sk_live_ or sk_test_ key. When APIKey, AccessToken and TokenSource are
	// all empty, the FKOD_API_KEY environment variable is used.
	APIKey string

	// AccessToken is an OAuth 2.0 access token, used in place of an API key.
	AccessToken string

	// TokenSource supplies access tokens; it takes precedence over AccessToken.
	TokenSource TokenSource

	// HTTPClient sends the requests. When nil, a client with Timeout is used.
	HTTPClient *http.Client

	// Timeout bounds each attempt of a request, when HTTPClient is nil (default 30 s).
	Timeout time.Duration

	// MaxRetries is the number of retries after the first attempt (default 3). Set
	// DisableRetries to make no retry at all.
	MaxRetries     int
	DisableRetries bool

	// InitialRetryDelay is the backoff before the first retry (default 500 ms); each later
	// retry doubles it, with full jitter.
	InitialRetryDelay time.Duration

	// MaxRetryDelay caps every wait between attempts (default 30 s). A Retry-After longer
	// than this ends the retries and returns the error at once.
	MaxRetryDelay time.Duration

	// APIVersion is sent in the FKOD-Version header (default APIVersion).
	APIVersion string

	// UserAgent is appended to the SDK's own User-Agent value, to name your application.
	UserAgent string
}

// Client calls the F-KOD API. It is safe for concurrent use.
type Client struct {
	baseURL       *url.URL
	apiKey        string
	accessToken   string
	tokenSource   TokenSource
	httpClient    *http.Client
	maxRetries    int
	initialDelay  time.Duration
	maxRetryDelay time.Duration
	apiVersion    string
	userAgent     string

	// sleep waits between attempts; it returns early with the context's error.
	sleep func(ctx context.Context, d time.Duration) error

	Users   *UsersService
	Courses *CoursesService
	Mentors *MentorsService
}

// NewClient checks config and returns a Client. It makes no network call.
func NewClient(config Config) (*Client, error) {
	base, err := resolveBaseURL(config.BaseURL)
	if err != nil {
		return nil, err
	}

	apiKey := config.APIKey
	if apiKey == "" && config.AccessToken == "" && config.TokenSource == nil {
		apiKey = os.Getenv("FKOD_API_KEY")
	}
	if apiKey == "" && config.AccessToken == "" && config.TokenSource == nil {
		return nil, errors.New("fkod: no credential: set Config.APIKey, Config.AccessToken, " +
			"Config.TokenSource or the FKOD_API_KEY environment variable")
	}

	c := &Client{
		baseURL:       base,
		apiKey:        apiKey,
		accessToken:   config.AccessToken,
		tokenSource:   config.TokenSource,
		httpClient:    config.HTTPClient,
		maxRetries:    config.MaxRetries,
		initialDelay:  config.InitialRetryDelay,
		maxRetryDelay: config.MaxRetryDelay,
		apiVersion:    config.APIVersion,
		userAgent:     userAgent(config.UserAgent),
		sleep:         sleepContext,
	}
	if c.httpClient == nil {
		timeout := config.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		c.httpClient = &http.Client{Timeout: timeout}
	}
	if c.maxRetries <= 0 {
		c.maxRetries = DefaultMaxRetries
	}
	if config.DisableRetries {
		c.maxRetries = 0
	}
	if c.initialDelay <= 0 {
		c.initialDelay = DefaultInitialDelay
	}
	if c.maxRetryDelay <= 0 {
		c.maxRetryDelay = DefaultMaxRetryDelay
	}
	if c.apiVersion == "" {
		c.apiVersion = APIVersion
	}

	c.Users = &UsersService{client: c}
	c.Courses = &CoursesService{client: c}
	c.Mentors = &MentorsService{client: c}
	return c, nil
}

func resolveBaseURL(configured string) (*url.URL, error) {
	raw := configured
	if raw == "" {
		raw = os.Getenv("FKOD_BASE_URL")
	}
	if raw == "" {
		return nil, errors.New("fkod: no base URL: set Config.BaseURL or the FKOD_BASE_URL " +
			"environment variable")
	}
	base, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil {
		return nil, fmt.Errorf("fkod: invalid base URL %q: %w", raw, err)
	}
	if (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("fkod: invalid base URL %q: expected an absolute http or https URL",
			raw)
	}
	return base, nil
}

func userAgent(suffix string) string {
	agent := fmt.Sprintf("fkod-go/%s (%s; %s/%s)", Version, runtime.Version(), runtime.GOOS,
		runtime.GOARCH)
	if suffix != "" {
		agent += " " + suffix
	}
	return agent
}

// RequestOption changes one call.
type RequestOption func(*requestSettings)

type requestSettings struct {
	idempotencyKey   string
	noIdempotencyKey bool
	apiVersion       string
	maxRetries       *int
	header           http.Header
}

// WithIdempotencyKey sends key as the Idempotency-Key of a POST, in place of the key the SDK
// generates. Send the same key again to get the stored response of the first call.
func WithIdempotencyKey(key string) RequestOption {
	return func(s *requestSettings) { s.idempotencyKey = key }
}

// WithoutIdempotencyKey sends a POST without an Idempotency-Key. Such a POST is never
// retried, because a retry could perform the operation twice.
func WithoutIdempotencyKey() RequestOption {
	return func(s *requestSettings) { s.noIdempotencyKey = true }
}

// WithAPIVersion sends version in the FKOD-Version header of this call.
func WithAPIVersion(version string) RequestOption {
	return func(s *requestSettings) { s.apiVersion = version }
}

// WithMaxRetries sets the number of retries of this call; 0 makes no retry.
func WithMaxRetries(retries int) RequestOption {
	return func(s *requestSettings) { s.maxRetries = &retries }
}

// WithHeader adds a header to this call.
func WithHeader(name, value string) RequestOption {
	return func(s *requestSettings) {
		if s.header == nil {
			s.header = http.Header{}
		}
		s.header.Add(name, value)
	}
}

// NewIdempotencyKey returns a random version 4 UUID, the form of the keys the SDK generates.
func NewIdempotencyKey() string {
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		panic("fkod: crypto/rand failed: " + err.Error())
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// call sends one logical API call, with retries, and decodes a 2xx JSON body into out.
func (c *Client) call(ctx context.Context, method, path string, query url.Values, body any,
	out any, options []RequestOption) error {

	settings := requestSettings{apiVersion: c.apiVersion}
	for _, option := range options {
		option(&settings)
	}

	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("fkod: encoding the request body: %w", err)
		}
	}

	// One key per logical call, reused on every retry, so the platform replays the stored
	// response instead of running the operation again.
	idempotencyKey := ""
	if method == http.MethodPost && !settings.noIdempotencyKey {
		idempotencyKey = settings.idempotencyKey
		if idempotencyKey == "" {
			idempotencyKey = NewIdempotencyKey()
		}
	}
	retryable := method != http.MethodPost || idempotencyKey != ""

	maxRetries := c.maxRetries
	if settings.maxRetries != nil {
		maxRetries = *settings.maxRetries
	}

	target := c.endpoint(path, query)
	for attempt := 0; ; attempt++ {
		credential, err := c.credential(ctx)
		if err != nil {
			return err
		}
		response, err := c.send(ctx, method, target, credential, payload, idempotencyKey,
			&settings)
		if err != nil {
			if ctx.Err() != nil || !retryable || attempt >= maxRetries || !isConnectionError(err) {
				return &ConnectionError{Method: method, URL: target, Err: err}
			}
			if err := c.sleep(ctx, c.backoff(attempt)); err != nil {
				return err
			}
			continue
		}

		if response.status >= 200 && response.status < 300 {
			if out == nil || len(response.body) == 0 {
				return nil
			}
			if err := json.Unmarshal(response.body, out); err != nil {
				return fmt.Errorf("fkod: decoding the %s %s response: %w", method, path, err)
			}
			return nil
		}

		apiErr := newAPIError(response.status, response.header, response.body)
		if !retryable || attempt >= maxRetries || !apiErr.retryable() {
			return apiErr
		}
		delay := c.backoff(attempt)
		if apiErr.RetryAfter > 0 {
			delay = apiErr.RetryAfter
		}
		if delay > c.maxRetryDelay {
			return apiErr
		}
		if err := c.sleep(ctx, delay); err != nil {
			return err
		}
	}
}

type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

func (c *Client) send(ctx context.Context, method, target, credential string, payload []byte,
	idempotencyKey string, settings *requestSettings) (*rawResponse, error) {

	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	request, err := http.NewRequestWithContext(ctx, method, target, reader)
	if err != nil {
		return nil, err
	}

	request.Header.Set("Authorization", "Bearer "+credential)
	request.Header.Set("Accept", "application/json")
	request.Header.Set("User-Agent", c.userAgent)
	if settings.apiVersion != "" {
		request.Header.Set("FKOD-Version", settings.apiVersion)
	}
	if payload != nil {
		request.Header.Set("Content-Type", "application/json")
	}
	if idempotencyKey != "" {
		request.Header.Set("Idempotency-Key", idempotencyKey)
	}
	for name, values := range settings.header {
		for _, value := range values {
			request.Header.Add(name, value)
		}
	}

	response, err := c.httpClient.Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, maxResponseBytes))
	if err != nil {
		return nil, err
	}
	return &rawResponse{status: response.StatusCode, header: response.Header, body: body}, nil
}

func (c *Client) credential(ctx context.Context) (string, error) {
	if c.tokenSource != nil {
		token, err := c.tokenSource.Token(ctx)
		if err != nil {
			return "", fmt.Errorf("fkod: getting an access token: %w", err)
		}
		return token, nil
	}
	if c.accessToken != "" {
		return c.accessToken, nil
	}
	return c.apiKey, nil
}

func (c *Client) endpoint(path string, query url.Values) string {
	target := *c.baseURL
	target.Path = c.baseURL.Path + path
	target.RawPath = ""
	if len(query) > 0 {
		target.RawQuery = query.Encode()
	}
	return target.String()
}

// backoff returns a random delay in [0, min(cap, initial * 2^attempt)): exponential backoff
// with full jitter, so that clients rejected together do not retry together.
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.initialDelay
	for i := 0; i < attempt && ceiling < c.maxRetryDelay; i++ {
		ceiling *= 2
	}
	if ceiling > c.maxRetryDelay {
		ceiling = c.maxRetryDelay
	}
	return time.Duration(randomInt63n(int64(ceiling)))
}

func randomInt63n(n int64) int64 {
	if n <= 0 {
		return 0
	}
	var b [8]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return n / 2
	}
	var value uint64
	for _, x := range b {
		value = value<<8 | uint64(x)
	}
	return int64(value>>1) % n
}

func sleepContext(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// isConnectionError reports whether err happened before a response arrived, in a way that
// a new attempt may not meet: a refused or reset connection, a timeout, an early EOF.
func isConnectionError(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var urlErr *url.Error
	return errors.As(err, &urlErr) || errors.Is(err, io.ErrUnexpectedEOF)
}
