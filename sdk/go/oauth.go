package fkod

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// OAuthConfig configures an OAuthClient for an application registered on the platform.
type OAuthConfig struct {
	// BaseURL is the platform's address; when empty, FKOD_BASE_URL is used.
	BaseURL  string
	ClientID string
	// ClientSecret is the secret of a confidential application, sent with HTTP Basic
	// authentication. Leave it empty for a public application, which relies on PKCE alone.
	ClientSecret string
	RedirectURI  string
	// HTTPClient sends token requests; when nil, a client with a 30 s timeout is used.
	HTTPClient *http.Client
}

// OAuthClient runs the OAuth 2.0 flows of a server-side application: the authorization code
// flow with PKCE (S256), refresh with rotation, client credentials and revocation.
type OAuthClient struct {
	config     OAuthConfig
	baseURL    *url.URL
	httpClient *http.Client
	userAgent  string
}

// Token is the response of the token endpoint.
type Token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	// ExpiresIn is the access token's lifetime in seconds.
	ExpiresIn int64 `json:"expires_in"`
	// RefreshToken is empty for the client credentials grant. The platform rotates refresh
	// tokens: each refresh returns a new one, and the old one stops working.
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	// ExpiresAt is computed from ExpiresIn when the response arrives.
	ExpiresAt time.Time `json:"-"`
}

// OAuthError is an error response of the token or revocation endpoint, as RFC 6749 section
// 5.2 defines it, such as invalid_grant or invalid_client.
type OAuthError struct {
	Status      int
	Code        string
	Description string
	RequestID   string
}

func (e *OAuthError) Error() string {
	message := fmt.Sprintf("fkod: OAuth error %d %s", e.Status, e.Code)
	if e.Description != "" {
		message += ": " + e.Description
	}
	return message
}

// NewOAuthClient checks config and returns an OAuthClient. It makes no network call.
func NewOAuthClient(config OAuthConfig) (*OAuthClient, error) {
	base, err := resolveBaseURL(config.BaseURL)
	if err != nil {
		return nil, err
	}
	if config.ClientID == "" {
		return nil, errors.New("fkod: OAuthConfig.ClientID is required")
	}
	httpClient := config.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Timeout: DefaultTimeout}
	}
	return &OAuthClient{config: config, baseURL: base, httpClient: httpClient,
		userAgent: userAgent("")}, nil
}

// NewCodeVerifier returns a PKCE code verifier: 43 characters of base64url over 32 random
// bytes, as RFC 7636 section 4.1 allows.
func NewCodeVerifier() string {
	return randomToken(32)
}

// CodeChallengeS256 returns the S256 code challenge of verifier.
func CodeChallengeS256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// NewState returns a random value for the state parameter, which the application stores and
// compares with the state of the redirect to detect cross-site request forgery.
func NewState() string {
	return randomToken(24)
}

func randomToken(size int) string {
	b := make([]byte, size)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic("fkod: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// AuthorizeURL returns the /oauth/authorize URL to send the user's browser to. scopes are
// space-joined; codeChallenge comes from CodeChallengeS256.
func (o *OAuthClient) AuthorizeURL(state, codeChallenge string, scopes []string) string {
	query := url.Values{}
	query.Set("response_type", "code")
	query.Set("client_id", o.config.ClientID)
	if o.config.RedirectURI != "" {
		query.Set("redirect_uri", o.config.RedirectURI)
	}
	if len(scopes) > 0 {
		query.Set("scope", strings.Join(scopes, " "))
	}
	query.Set("state", state)
	query.Set("code_challenge", codeChallenge)
	query.Set("code_challenge_method", "S256")
	return o.endpoint("/oauth/authorize") + "?" + query.Encode()
}

// ExchangeCode exchanges the code of the redirect, with the verifier whose challenge the
// authorize URL carried, for an access token and a refresh token.
func (o *OAuthClient) ExchangeCode(ctx context.Context, code, codeVerifier string) (*Token,
	error) {
	form := url.Values{}
	form.Set("grant_type", "authorization_code")
	form.Set("code", code)
	form.Set("code_verifier", codeVerifier)
	if o.config.RedirectURI != "" {
		form.Set("redirect_uri", o.config.RedirectURI)
	}
	return o.token(ctx, form)
}

// Refresh exchanges a refresh token for a new access token and a new refresh token. scopes
// may narrow the grant; when empty, the token keeps its scopes.
func (o *OAuthClient) Refresh(ctx context.Context, refreshToken string, scopes []string) (*Token,
	error) {
	form := url.Values{}
	form.Set("grant_type", "refresh_token")
	form.Set("refresh_token", refreshToken)
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	return o.token(ctx, form)
}

// ClientCredentials gets an access token that acts for the partner itself, for a
// confidential application registered with the client_credentials grant. When scopes is
// empty, the token gets every scope of the application.
func (o *OAuthClient) ClientCredentials(ctx context.Context, scopes []string) (*Token, error) {
	form := url.Values{}
	form.Set("grant_type", "client_credentials")
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	return o.token(ctx, form)
}

// Revoke revokes an access or refresh token, as RFC 7009 defines it.
func (o *OAuthClient) Revoke(ctx context.Context, token string) error {
	form := url.Values{}
	form.Set("token", token)
	_, err := o.post(ctx, "/oauth/revoke", form)
	return err
}

func (o *OAuthClient) token(ctx context.Context, form url.Values) (*Token, error) {
	body, err := o.post(ctx, "/oauth/token", form)
	if err != nil {
		return nil, err
	}
	var token Token
	if err := json.Unmarshal(body, &token); err != nil {
		return nil, fmt.Errorf("fkod: decoding the token response: %w", err)
	}
	if token.AccessToken == "" {
		return nil, errors.New("fkod: the token response has no access_token")
	}
	token.ExpiresAt = time.Now().Add(time.Duration(token.ExpiresIn) * time.Second)
	return &token, nil
}

func (o *OAuthClient) post(ctx context.Context, path string, form url.Values) ([]byte, error) {
	if o.config.ClientSecret == "" {
		form.Set("client_id", o.config.ClientID)
	}
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, o.endpoint(path),
		strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	request.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	request.Header.Set("Accept", "application/json")
	request.Header.Set("User-Agent", o.userAgent)
	if o.config.ClientSecret != "" {
		// RFC 6749 section 2.3.1 form-encodes both parts before the Basic encoding.
		request.SetBasicAuth(url.QueryEscape(o.config.ClientID),
			url.QueryEscape(o.config.ClientSecret))
	}

	response, err := o.httpClient.Do(request)
	if err != nil {
		return nil, &ConnectionError{Method: http.MethodPost, URL: request.URL.String(), Err: err}
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, maxResponseBytes))
	if err != nil {
		return nil, &ConnectionError{Method: http.MethodPost, URL: request.URL.String(), Err: err}
	}
	if response.StatusCode >= 200 && response.StatusCode < 300 {
		return body, nil
	}

	oauthErr := &OAuthError{Status: response.StatusCode,
		RequestID: response.Header.Get("X-Request-Id")}
	var payload struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Code        string `json:"code"`
		Message     string `json:"message"`
	}
	_ = json.Unmarshal(body, &payload)
	oauthErr.Code, oauthErr.Description = payload.Error, payload.Description
	if oauthErr.Code == "" {
		// Errors outside the OAuth protocol, such as a rate limit, use the API envelope.
		oauthErr.Code, oauthErr.Description = payload.Code, payload.Message
	}
	if oauthErr.Code == "" {
		oauthErr.Code = "http_" + fmt.Sprint(response.StatusCode)
	}
	return nil, oauthErr
}

func (o *OAuthClient) endpoint(path string) string {
	target := *o.baseURL
	target.Path = o.baseURL.Path + path
	return target.String()
}

// ClientCredentialsTokenSource is a TokenSource that gets tokens with the client credentials
// grant and reuses each one until shortly before it expires.
type ClientCredentialsTokenSource struct {
	OAuth  *OAuthClient
	Scopes []string

	mu    sync.Mutex
	token *Token
}

// tokenRenewMargin renews a token this long before its expiry, so that a request sent with it
// does not arrive after it expired.
const tokenRenewMargin = 30 * time.Second

// Token returns a valid access token, getting a new one when needed.
func (s *ClientCredentialsTokenSource) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == nil || time.Until(s.token.ExpiresAt) < tokenRenewMargin {
		token, err := s.OAuth.ClientCredentials(ctx, s.Scopes)
		if err != nil {
			return "", err
		}
		s.token = token
	}
	return s.token.AccessToken, nil
}
