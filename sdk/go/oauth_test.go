package fkod_test

import (
	"context"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	fkod "github.com/fkod/fkod-go"
)

func TestCodeChallengeIsS256OfVerifier(t *testing.T) {
	// FKOD_PKCE_CHALLENGE was computed from FKOD_PKCE_VERIFIER by another implementation.
	verifier := os.Getenv("FKOD_PKCE_VERIFIER")
	if verifier == "" {
		t.Skip("FKOD_PKCE_VERIFIER is not set; run tests/sdk/test_go_sdk.py")
	}
	if got := fkod.CodeChallengeS256(verifier); got != os.Getenv("FKOD_PKCE_CHALLENGE") {
		t.Errorf("challenge of %q = %q, expected %q", verifier, got,
			os.Getenv("FKOD_PKCE_CHALLENGE"))
	}

	generated := fkod.NewCodeVerifier()
	if len(generated) < 43 || len(generated) > 128 || strings.ContainsAny(generated, "+/=") {
		t.Errorf("verifier %q is not 43 to 128 unreserved characters", generated)
	}
	if fkod.NewCodeVerifier() == generated {
		t.Errorf("two verifiers are equal")
	}
}

func newOAuthClient(t *testing.T, secret string) *fkod.OAuthClient {
	t.Helper()
	if os.Getenv("FKOD_OAUTH_CLIENT_ID") == "" {
		t.Skip("FKOD_OAUTH_CLIENT_ID is not set; run tests/sdk/test_go_sdk.py to register an application")
	}
	oauth, err := fkod.NewOAuthClient(fkod.OAuthConfig{
		ClientID:     os.Getenv("FKOD_OAUTH_CLIENT_ID"),
		ClientSecret: secret,
		RedirectURI:  os.Getenv("FKOD_OAUTH_REDIRECT_URI"),
	})
	if err != nil {
		t.Fatalf("NewOAuthClient: %v", err)
	}
	return oauth
}

func asOAuthError(t *testing.T, err error) *fkod.OAuthError {
	t.Helper()
	var oauthErr *fkod.OAuthError
	if !errors.As(err, &oauthErr) {
		t.Fatalf("expected *fkod.OAuthError, got %T: %v", err, err)
	}
	return oauthErr
}

func TestClientCredentialsTokenCallsAPI(t *testing.T) {
	oauth := newOAuthClient(t, os.Getenv("FKOD_OAUTH_CLIENT_SECRET"))
	ctx := context.Background()

	token, err := oauth.ClientCredentials(ctx, []string{"users:read"})
	if err != nil {
		t.Fatalf("ClientCredentials: %v", err)
	}
	if token.Scope != "users:read" || token.RefreshToken != "" || token.ExpiresIn <= 0 {
		t.Errorf("token = scope %q, refresh %q, expires_in %d", token.Scope, token.RefreshToken,
			token.ExpiresIn)
	}

	source := &fkod.ClientCredentialsTokenSource{OAuth: oauth, Scopes: []string{"users:read"}}
	client, err := fkod.NewClient(fkod.Config{TokenSource: source})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	if _, err := client.Users.List(ctx, fkod.UserListParams{Limit: 1}); err != nil {
		t.Fatalf("listing users with a client credentials token: %v", err)
	}
	_, err = client.Users.Create(ctx, fkod.UserCreateParams{Email: uniqueEmail("scope")})
	if apiErr := asAPIError(t, err); apiErr.Status != 403 {
		t.Errorf("a users:read token created a user: %d %s", apiErr.Status, apiErr.Code)
	}

	_, err = newOAuthClient(t, "wrong-secret").ClientCredentials(ctx, nil)
	oauthErr := asOAuthError(t, err)
	if oauthErr.Status != 401 || oauthErr.Code != "invalid_client" {
		t.Errorf("wrong secret: %d %q", oauthErr.Status, oauthErr.Code)
	}
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// approveInBrowser plays the user's part of the authorization code flow: it opens the
// authorize URL, logs in as the partner's owner, allows access, and returns the redirect.
func approveInBrowser(t *testing.T, authorizeURL string) *url.URL {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	submit := func(fields url.Values) *http.Response {
		page, err := browser.Get(authorizeURL)
		if err != nil {
			t.Fatalf("opening the authorize page: %v", err)
		}
		body := readAll(t, page)
		match := csrfField.FindStringSubmatch(body)
		if match == nil {
			t.Fatalf("no csrf_token on the authorize page (%d): %s", page.StatusCode, body)
		}
		fields.Set("csrf_token", html.UnescapeString(match[1]))
		response, err := browser.PostForm(authorizeURL, fields)
		if err != nil {
			t.Fatalf("posting the authorize form: %v", err)
		}
		response.Body.Close()
		return response
	}

	login := submit(url.Values{"action": {"login"}, "email": {os.Getenv("FKOD_OWNER_EMAIL")},
		"password": {os.Getenv("FKOD_OWNER_PASSWORD")}})
	if login.StatusCode != http.StatusSeeOther {
		t.Fatalf("login answered %d, expected 303", login.StatusCode)
	}
	approval := submit(url.Values{"action": {"approve"}})
	if approval.StatusCode != http.StatusFound {
		t.Fatalf("approval answered %d, expected 302", approval.StatusCode)
	}
	location, err := url.Parse(approval.Header.Get("Location"))
	if err != nil {
		t.Fatalf("invalid redirect: %v", err)
	}
	return location
}

func readAll(t *testing.T, response *http.Response) string {
	t.Helper()
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		t.Fatalf("reading the authorize page: %v", err)
	}
	return string(body)
}

func TestAuthorizationCodeFlowWithRefreshAndRevoke(t *testing.T) {
	oauth := newOAuthClient(t, os.Getenv("FKOD_OAUTH_CLIENT_SECRET"))
	ctx := context.Background()
	verifier := fkod.NewCodeVerifier()
	state := fkod.NewState()

	authorizeURL := oauth.AuthorizeURL(state, fkod.CodeChallengeS256(verifier),
		[]string{"users:read"})
	redirect := approveInBrowser(t, authorizeURL)
	if !strings.HasPrefix(redirect.String(), os.Getenv("FKOD_OAUTH_REDIRECT_URI")+"?") {
		t.Fatalf("redirected to %s", redirect)
	}
	if redirect.Query().Get("state") != state {
		t.Errorf("state = %q, expected %q", redirect.Query().Get("state"), state)
	}

	_, err := oauth.ExchangeCode(ctx, redirect.Query().Get("code"), fkod.NewCodeVerifier())
	if oauthErr := asOAuthError(t, err); oauthErr.Code != "invalid_grant" {
		t.Errorf("a wrong verifier gave %q, expected invalid_grant", oauthErr.Code)
	}

	// The wrong verifier above made the server revoke the code, so approve again.
	verifier = fkod.NewCodeVerifier()
	redirect = approveInBrowser(t, oauth.AuthorizeURL(state, fkod.CodeChallengeS256(verifier),
		[]string{"users:read"}))
	token, err := oauth.ExchangeCode(ctx, redirect.Query().Get("code"), verifier)
	if err != nil {
		t.Fatalf("ExchangeCode: %v", err)
	}
	if token.AccessToken == "" || token.RefreshToken == "" || token.Scope != "users:read" {
		t.Fatalf("token = %+v", token)
	}

	client, err := fkod.NewClient(fkod.Config{AccessToken: token.AccessToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Users.List(ctx, fkod.UserListParams{}); err != nil {
		t.Fatalf("listing users with the user's token: %v", err)
	}

	refreshed, err := oauth.Refresh(ctx, token.RefreshToken, nil)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == token.RefreshToken {
		t.Errorf("the refresh token was not rotated")
	}
	_, err = oauth.Refresh(ctx, token.RefreshToken, nil)
	if oauthErr := asOAuthError(t, err); oauthErr.Code != "invalid_grant" {
		t.Errorf("reusing a rotated refresh token gave %q, expected invalid_grant", oauthErr.Code)
	}

	revoking, err := fkod.NewClient(fkod.Config{AccessToken: refreshed.AccessToken,
		DisableRetries: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := oauth.Revoke(ctx, refreshed.AccessToken); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	_, err = revoking.Users.List(ctx, fkod.UserListParams{})
	if apiErr := asAPIError(t, err); apiErr.Status != 401 {
		t.Errorf("a revoked token answered %d", apiErr.Status)
	}
}
