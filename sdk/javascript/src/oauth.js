/**
 * OAuth 2.0 with the platform's authorization server, on `fetch` and Web Crypto,
 * so that the same code runs in Node and in browsers.
 *
 * - Authorization code with PKCE (S256): {@link OAuthClient#authorizationRequest}
 *   builds the URL with a fresh `state` and code verifier,
 *   {@link OAuthClient#parseCallback} checks the redirect, and
 *   {@link OAuthClient#exchangeCode} trades the code for tokens. This is the only
 *   way a browser app should get a credential.
 * - {@link OAuthClient#refresh}: the server rotates refresh tokens, so each one
 *   works once and the response carries the next. Reusing a spent refresh token
 *   revokes the whole family.
 * - {@link OAuthClient#clientCredentials}: a token for a confidential application
 *   acting for its partner, on a server only.
 */

import { ApiConnectionError, ApiTimeoutError, OAuthError } from './errors.js';
import { decodeJson, fetchWithTimeout, isBrowser, resolveBaseUrl, userAgent } from './http.js';

const AUTHORIZE_PATH = '/oauth/authorize';
const TOKEN_PATH = '/oauth/token';
const REVOKE_PATH = '/oauth/revoke';
const METADATA_PATH = '/.well-known/oauth-authorization-server';

/**
 * @param {Uint8Array} bytes
 * @returns {string} unpadded base64url
 */
function base64Url(bytes) {
  let binary = '';
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** @returns {string} a random URL-safe string from `size` random bytes */
function randomToken(size) {
  return base64Url(globalThis.crypto.getRandomValues(new Uint8Array(size)));
}

/** @returns {string} a PKCE code verifier: 64 URL-safe characters from 48 random bytes */
export function generateCodeVerifier() {
  return randomToken(48);
}

/**
 * @param {string} verifier
 * @returns {Promise<string>} the S256 code challenge: unpadded base64url of its SHA-256
 */
export async function codeChallengeS256(verifier) {
  const digest = await globalThis.crypto.subtle.digest('SHA-256',
    new TextEncoder().encode(verifier));
  return base64Url(new Uint8Array(digest));
}

/** @returns {Promise<{codeVerifier: string, codeChallenge: string}>} */
export async function createPkcePair() {
  const codeVerifier = generateCodeVerifier();
  return { codeVerifier, codeChallenge: await codeChallengeS256(codeVerifier) };
}

function scopeText(scopes) {
  if (scopes === undefined || scopes === null) {
    return undefined;
  }
  return typeof scopes === 'string' ? scopes : scopes.join(' ');
}

/**
 * An OAuth application registered with the platform.
 *
 * `clientSecret` is for a confidential application on a server; the SDK then
 * authenticates to the token endpoint with HTTP Basic. A browser app is a
 * public application: it has no secret and relies on PKCE, and the constructor
 * throws when given a secret in a browser.
 */
export class OAuthClient {
  /**
   * @param {{baseUrl?: string, clientId: string, clientSecret?: string, redirectUri?: string,
   *          timeoutMs?: number, fetch?: typeof fetch}} options
   */
  constructor({ baseUrl, clientId, clientSecret, redirectUri, timeoutMs = 30000,
    fetch: fetchImpl }) {
    if (!clientId) {
      throw new TypeError('clientId is missing.');
    }
    if (clientSecret && isBrowser()) {
      throw new TypeError('A client secret must not be used in a browser. Register a public '
        + 'application and use the authorization code flow with PKCE.');
    }
    this.baseUrl = resolveBaseUrl(baseUrl);
    this.clientId = clientId;
    this.clientSecret = clientSecret;
    this.redirectUri = redirectUri;
    this._timeoutMs = timeoutMs;
    this._fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * Build the authorization URL with a new PKCE verifier (S256) and `state`.
   * Keep `state` and `codeVerifier` (in `sessionStorage`, for a browser) until the
   * redirect comes back.
   *
   * @param {{scopes: string | string[], redirectUri?: string, state?: string}} options
   * @returns {Promise<{url: string, state: string, codeVerifier: string,
   *                    codeChallenge: string}>}
   */
  async authorizationRequest({ scopes, redirectUri, state }) {
    const redirect = redirectUri ?? this.redirectUri;
    if (!redirect) {
      throw new TypeError('redirectUri is missing: pass it here or to OAuthClient.');
    }
    const { codeVerifier, codeChallenge } = await createPkcePair();
    const chosenState = state ?? randomToken(24);
    const url = new URL(this.baseUrl + AUTHORIZE_PATH);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: this.clientId,
      redirect_uri: redirect,
      scope: scopeText(scopes) ?? '',
      state: chosenState,
      code_challenge: codeChallenge,
      code_challenge_method: 'S256',
    }).toString();
    return { url: url.toString(), state: chosenState, codeVerifier, codeChallenge };
  }

  /**
   * Read the code from the URL the server redirected to, after checking `state`.
   *
   * @param {string | URL} callbackUrl
   * @param {{expectedState: string}} options
   * @returns {string} the authorization code
   * @throws {OAuthError} for an error redirect (`access_denied`, ...) or a state mismatch
   */
  parseCallback(callbackUrl, { expectedState }) {
    const params = new URL(callbackUrl).searchParams;
    if (params.get('state') !== expectedState) {
      throw new OAuthError({ status: 0, error: 'state_mismatch',
        description: 'The callback state differs from the one sent; ignore this callback.',
        requestId: null });
    }
    const error = params.get('error');
    if (error) {
      throw new OAuthError({ status: 0, error, description: params.get('error_description'),
        requestId: null });
    }
    const code = params.get('code');
    if (!code) {
      throw new OAuthError({ status: 0, error: 'invalid_callback',
        description: 'The callback URL has no code.', requestId: null });
    }
    return code;
  }

  /**
   * Trade an authorization code and its PKCE verifier for tokens.
   *
   * @param {string} code
   * @param {{codeVerifier: string, redirectUri?: string}} options
   */
  exchangeCode(code, { codeVerifier, redirectUri }) {
    const redirect = redirectUri ?? this.redirectUri;
    if (!redirect) {
      throw new TypeError('redirectUri is missing: pass the one used to authorize.');
    }
    return this._token({ grant_type: 'authorization_code', code, redirect_uri: redirect,
      code_verifier: codeVerifier });
  }

  /**
   * Trade a refresh token for new tokens; keep the new refresh token it returns.
   *
   * @param {string} refreshToken
   * @param {{scopes?: string | string[]}} [options]
   */
  refresh(refreshToken, { scopes } = {}) {
    const form = { grant_type: 'refresh_token', refresh_token: refreshToken };
    const scope = scopeText(scopes);
    return this._token(scope ? { ...form, scope } : form);
  }

  /**
   * Get a token for the application itself; needs a confidential application.
   *
   * @param {{scopes?: string | string[]}} [options]
   */
  clientCredentials({ scopes } = {}) {
    if (!this.clientSecret) {
      throw new TypeError('clientCredentials needs the clientSecret of a confidential '
        + 'application.');
    }
    const scope = scopeText(scopes);
    return this._token(scope ? { grant_type: 'client_credentials', scope }
      : { grant_type: 'client_credentials' });
  }

  /**
   * Revoke an access or refresh token. An unknown token is not an error (RFC 7009).
   *
   * @param {string} token
   * @param {{tokenTypeHint?: 'access_token' | 'refresh_token'}} [options]
   * @returns {Promise<void>}
   */
  async revoke(token, { tokenTypeHint } = {}) {
    const form = tokenTypeHint ? { token, token_type_hint: tokenTypeHint } : { token };
    await this._post(REVOKE_PATH, form);
  }

  /** @returns {Promise<Record<string, unknown>>} the authorization server metadata (RFC 8414) */
  async metadata() {
    const response = await this._send(METADATA_PATH, { method: 'GET', headers: this._headers() });
    const body = await decodeJson(response);
    if (response.status !== 200 || body === null || typeof body !== 'object') {
      throw oauthError(response, body);
    }
    return body;
  }

  async _token(form) {
    const body = await this._post(TOKEN_PATH, form);
    if (body === null || typeof body !== 'object' || typeof body.access_token !== 'string') {
      throw new OAuthError({ status: 200, error: 'invalid_response',
        description: 'The token response has no access_token.', requestId: null });
    }
    return body;
  }

  _headers() {
    const headers = { Accept: 'application/json' };
    const agent = userAgent();
    if (agent) {
      headers['User-Agent'] = agent;
    }
    return headers;
  }

  async _post(path, form) {
    const headers = { ...this._headers(), 'Content-Type': 'application/x-www-form-urlencoded' };
    let fields = form;
    if (this.clientSecret) {
      // RFC 6749 section 2.3.1: both parts are form-encoded before Basic encoding.
      const pair = `${encodeURIComponent(this.clientId)}:${encodeURIComponent(this.clientSecret)}`;
      headers.Authorization = `Basic ${btoa(pair)}`;
    } else {
      fields = { ...form, client_id: this.clientId };
    }
    // Token requests are not retried: a code or a refresh token works only once.
    const response = await this._send(path, { method: 'POST', headers,
      body: new URLSearchParams(fields).toString() });
    const body = await decodeJson(response);
    if (!response.ok) {
      throw oauthError(response, body);
    }
    return body;
  }

  async _send(path, init) {
    try {
      return await fetchWithTimeout(this._fetch, this.baseUrl + path,
        { ...init, redirect: 'manual' }, this._timeoutMs);
    } catch (error) {
      if (error?.name === 'TimeoutError') {
        throw new ApiTimeoutError(`${init.method} ${path} timed out.`, { cause: error });
      }
      throw new ApiConnectionError(`${init.method} ${path} failed: ${error?.message ?? error}`,
        { cause: error });
    }
  }
}

function oauthError(response, body) {
  const envelope = body !== null && typeof body === 'object' ? body : {};
  // The OAuth endpoints answer {"error", "error_description"}; other paths use the
  // platform's envelope with "code" and "message".
  return new OAuthError({
    status: response.status,
    error: String(envelope.error || envelope.code || 'http_error'),
    description: envelope.error_description ?? envelope.message ?? null,
    requestId: response.headers.get('x-request-id'),
  });
}
