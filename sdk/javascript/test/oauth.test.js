import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';

import {
  AuthenticationError, FkodClient, OAuthClient, OAuthError, codeChallengeS256,
  generateCodeVerifier,
} from '../src/index.js';
import { environment, partnerPost } from './helpers.js';

// The gateway caches a verified token for up to 1 s (fkod.gateway.key_cache_seconds), so a
// revoked token may still work that long.
const REVOCATION_DELAY_MS = 3000;

async function rejectedWithin(api, ms) {
  const deadline = performance.now() + ms;
  for (;;) {
    const outcome = await api.users.list({ limit: 1 }).catch((caught) => caught);
    if (outcome instanceof Error || performance.now() > deadline) {
      return outcome;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function confidentialApplication() {
  return partnerPost('/api/developers/applications', {
    name: 'SDK tests', client_type: 'confidential', grant_types: ['client_credentials'],
    redirect_uris: [], scopes: ['users:read', 'users:write'],
  });
}

function oauthClient(application, secret = application.client_secret) {
  return new OAuthClient({ baseUrl: environment().FKOD_BASE_URL,
    clientId: application.client_id, clientSecret: secret });
}

test('client credentials token calls the API, then stops after revocation', async () => {
  const application = await confidentialApplication();
  const oauth = oauthClient(application);

  const token = await oauth.clientCredentials({ scopes: ['users:read'] });
  const api = new FkodClient({ baseUrl: environment().FKOD_BASE_URL,
    accessToken: () => token.access_token });
  const page = await api.users.list({ limit: 1 });
  await oauth.revoke(token.access_token);
  const after = await rejectedWithin(api, REVOCATION_DELAY_MS);

  assert.equal(token.token_type.toLowerCase(), 'bearer');
  assert.equal(token.scope, 'users:read');
  assert.equal(token.refresh_token, undefined);
  assert.ok(Array.isArray(page.data));
  assert.ok(after instanceof AuthenticationError, String(after));
});

test('wrong client secret is invalid_client', async () => {
  const application = await confidentialApplication();

  const error = await oauthClient(application, 'wrong').clientCredentials()
    .catch((caught) => caught);

  assert.ok(error instanceof OAuthError, String(error));
  assert.equal(error.status, 401);
  assert.equal(error.error, 'invalid_client');
});

test('scope beyond the application is invalid_scope', async () => {
  const application = await confidentialApplication();

  const error = await oauthClient(application).clientCredentials({ scopes: 'courses:write' })
    .catch((caught) => caught);

  assert.ok(error instanceof OAuthError, String(error));
  assert.equal(error.error, 'invalid_scope');
});

test('metadata lists S256 and the grants', async () => {
  const oauth = new OAuthClient({ baseUrl: environment().FKOD_BASE_URL, clientId: 'unused' });

  const metadata = await oauth.metadata();

  assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
  assert.ok(metadata.grant_types_supported.includes('client_credentials'));
});

test('authorization URL carries PKCE S256 and state', async () => {
  const env = environment();
  const oauth = new OAuthClient({ baseUrl: env.FKOD_BASE_URL, clientId: 'app-client',
    redirectUri: 'https://app.example/callback' });

  const first = await oauth.authorizationRequest({ scopes: ['users:read', 'courses:read'] });
  const second = await oauth.authorizationRequest({ scopes: 'users:read' });

  const url = new URL(first.url);
  assert.equal(`${url.origin}${url.pathname}`, `${env.FKOD_BASE_URL}/oauth/authorize`);
  assert.equal(url.searchParams.get('response_type'), 'code');
  assert.equal(url.searchParams.get('client_id'), 'app-client');
  assert.equal(url.searchParams.get('redirect_uri'), 'https://app.example/callback');
  assert.equal(url.searchParams.get('scope'), 'users:read courses:read');
  assert.equal(url.searchParams.get('state'), first.state);
  assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(url.searchParams.get('code_challenge'), first.codeChallenge);
  assert.equal(first.codeChallenge, createHash('sha256').update(first.codeVerifier)
    .digest('base64url'));
  assert.notEqual(first.state, second.state);
  assert.notEqual(first.codeVerifier, second.codeVerifier);
  assert.ok(first.codeVerifier.length >= 43);
  assert.ok(first.codeVerifier.length <= 128);
});

test('callback is checked for state and errors', () => {
  const oauth = new OAuthClient({ baseUrl: environment().FKOD_BASE_URL, clientId: 'app' });
  const base = 'https://app.example/callback';

  assert.equal(oauth.parseCallback(`${base}?code=abc&state=s1`, { expectedState: 's1' }), 'abc');
  assert.throws(() => oauth.parseCallback(`${base}?code=abc&state=s2`, { expectedState: 's1' }),
    (error) => error instanceof OAuthError && error.error === 'state_mismatch');
  assert.throws(() => oauth.parseCallback(`${base}?error=access_denied&state=s1`,
    { expectedState: 's1' }),
  (error) => error instanceof OAuthError && error.error === 'access_denied');
});

test('code challenge matches the RFC 7636 example', async () => {
  // The verifier and challenge of RFC 7636, appendix B.
  assert.equal(await codeChallengeS256('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'),
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
});

// Authorization code with PKCE, through the login and consent pages --------------

const REDIRECT_URI = 'http://127.0.0.1:9/callback';
const CSRF = /name="csrf_token" value="([^"]+)"/;

/** Log in and approve on the platform's pages as a browser would; return the redirect. */
async function approveInBrowser(url) {
  const email = process.env.FKOD_OWNER_EMAIL;
  const password = process.env.FKOD_OWNER_PASSWORD;
  assert.ok(email, 'Set FKOD_OWNER_EMAIL to test the login pages.');
  assert.ok(password, 'Set FKOD_OWNER_PASSWORD to test the login pages.');
  const cookies = new Map();
  const send = async (init) => {
    const headers = { ...init.headers };
    if (cookies.size > 0) {
      headers.Cookie = [...cookies].map(([name, value]) => `${name}=${value}`).join('; ');
    }
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const equals = pair.indexOf('=');
      cookies.set(pair.slice(0, equals).trim(), pair.slice(equals + 1).trim());
    }
    return { status: response.status, text: await response.text(), headers: response.headers };
  };
  const post = (fields) => send({ method: 'POST', body: new URLSearchParams(fields).toString(),
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });

  const loginPage = await send({ method: 'GET' });
  assert.equal(loginPage.status, 200, loginPage.text);
  const loggedIn = await post({ csrf_token: CSRF.exec(loginPage.text)[1], action: 'login',
    email, password });
  assert.equal(loggedIn.status, 303, loggedIn.text);
  const consentPage = await send({ method: 'GET' });
  assert.equal(consentPage.status, 200, consentPage.text);
  const decision = await post({ csrf_token: CSRF.exec(consentPage.text)[1], action: 'approve' });
  assert.equal(decision.status, 302, decision.text);
  return decision.headers.get('location');
}

async function publicApplication() {
  return partnerPost('/api/developers/applications', {
    name: 'SDK browser app', client_type: 'public',
    grant_types: ['authorization_code', 'refresh_token'], redirect_uris: [REDIRECT_URI],
    scopes: ['users:read'],
  });
}

test('authorization code flow with PKCE, then refresh', async () => {
  const env = environment();
  const application = await publicApplication();
  const oauth = new OAuthClient({ baseUrl: env.FKOD_BASE_URL, clientId: application.client_id,
    redirectUri: REDIRECT_URI });
  const request = await oauth.authorizationRequest({ scopes: ['users:read'] });

  const callback = await approveInBrowser(request.url);
  const code = oauth.parseCallback(callback, { expectedState: request.state });
  const tokens = await oauth.exchangeCode(code, { codeVerifier: request.codeVerifier });
  const api = new FkodClient({ baseUrl: env.FKOD_BASE_URL, accessToken: tokens.access_token });
  const users = await api.users.list();
  const refreshed = await oauth.refresh(tokens.refresh_token);
  const reused = await oauth.refresh(tokens.refresh_token).catch((caught) => caught);

  assert.ok(callback.startsWith(`${REDIRECT_URI}?`));
  assert.equal(tokens.scope, 'users:read');
  assert.ok(tokens.refresh_token);
  assert.equal(users.data.length, 1);
  assert.ok(refreshed.refresh_token);
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  assert.ok(reused instanceof OAuthError, String(reused));
  assert.equal(reused.error, 'invalid_grant');
});

test('code exchange with a wrong verifier is refused', async () => {
  const env = environment();
  const application = await publicApplication();
  const oauth = new OAuthClient({ baseUrl: env.FKOD_BASE_URL, clientId: application.client_id,
    redirectUri: REDIRECT_URI });
  const request = await oauth.authorizationRequest({ scopes: 'users:read' });
  const code = oauth.parseCallback(await approveInBrowser(request.url),
    { expectedState: request.state });

  const error = await oauth.exchangeCode(code, { codeVerifier: generateCodeVerifier() })
    .catch((caught) => caught);

  assert.ok(error instanceof OAuthError, String(error));
  assert.equal(error.status, 400);
  assert.equal(error.error, 'invalid_grant');
});
