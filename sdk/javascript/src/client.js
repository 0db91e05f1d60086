/**
 * The client of the F-KOD API: users, courses and mentors through the gateway.
 */

import {
  ApiConnectionError, ApiTimeoutError, errorFromResponse, parseRetryAfter, rateLimitFromHeaders,
} from './errors.js';
import {
  IN_PROGRESS_CODE, RETRYABLE_STATUSES, RetryPolicy, decodeJson, environmentVariable,
  fetchWithTimeout, isBrowser, resolveBaseUrl, sleep, userAgent,
} from './http.js';
import { API_VERSION } from './version.js';

/**
 * @typedef {object} ResponseInfo What `onResponse` receives for every HTTP response,
 *   retried ones included.
 * @property {string} method
 * @property {string} path
 * @property {number} status
 * @property {number} attempt 0 for the first attempt, 1 for the first retry, and so on
 * @property {string | null} requestId
 * @property {string | null} apiVersion
 * @property {{limit: number, remaining: number, resetAt: number} | null} rateLimit
 * @property {string | null} idempotencyKey
 * @property {boolean} replayed true when the API replayed a stored idempotent response
 */

/**
 * @typedef {object} Page One page of a cursor-paginated list.
 * @property {Array<object>} data
 * @property {boolean} has_more
 * @property {string | null} next_cursor pass it as `cursor` to get the next page
 */

/**
 * Quote an id as one path segment, so that it cannot change the path.
 *
 * @param {string} id
 * @returns {string}
 */
function segment(id) {
  if (typeof id !== 'string' || id === '') {
    throw new TypeError(`An id must be a non-empty string, got ${JSON.stringify(id)}.`);
  }
  return encodeURIComponent(id);
}

/**
 * Keep the fields whose value is not undefined.
 *
 * @param {Record<string, unknown>} fields
 * @returns {Record<string, unknown>}
 */
function defined(fields) {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}

/**
 * A client of the F-KOD API for one credential.
 *
 * In Node the credential is an `apiKey` (`sk_test_...`, `sk_live_...`) or an
 * OAuth `accessToken`; without either the client reads `FKOD_API_KEY`. In a
 * browser only `accessToken` is accepted, obtained through the authorization
 * code flow with PKCE, because anyone who opens the page can read an API key.
 *
 * GET and PUT are retried on 429, 503, timeouts and network errors. POST is
 * retried only with an Idempotency-Key: each POST method generates one unless
 * `autoIdempotencyKeys` is false, and sends the same key on every retry.
 */
export class FkodClient {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] the platform's address; default FKOD_BASE_URL
   * @param {string} [options.apiKey]
   * @param {string | (() => string | Promise<string>)} [options.accessToken] a token, or a
   *   function that returns the current one; it is called before every request
   * @param {string | null} [options.apiVersion] sent as FKOD-Version; null sends none
   * @param {number} [options.timeoutMs] per attempt, 30 s by default
   * @param {number} [options.maxRetries]
   * @param {RetryPolicy} [options.retry]
   * @param {boolean} [options.autoIdempotencyKeys]
   * @param {(info: ResponseInfo) => void} [options.onResponse]
   * @param {typeof fetch} [options.fetch]
   */
  constructor({
    baseUrl, apiKey, accessToken, apiVersion = API_VERSION, timeoutMs = 30000, maxRetries = 2,
    retry, autoIdempotencyKeys = true, onResponse, fetch: fetchImpl,
  } = {}) {
    this.baseUrl = resolveBaseUrl(baseUrl);
    if (apiKey !== undefined && accessToken !== undefined) {
      throw new TypeError('Pass either apiKey or accessToken, not both.');
    }
    if (apiKey !== undefined && isBrowser()) {
      throw new TypeError('API keys must not be used in a browser, where anyone can read '
        + 'them. Use an OAuth access token from the authorization code flow with PKCE.');
    }
    const credential = apiKey ?? accessToken
      ?? (isBrowser() ? undefined : environmentVariable('FKOD_API_KEY'));
    if (!credential) {
      throw new TypeError('No credential: pass apiKey or accessToken, or set FKOD_API_KEY.');
    }
    this._credential = credential;
    this._apiVersion = apiVersion;
    this._timeoutMs = timeoutMs;
    this._retry = retry ?? new RetryPolicy({ maxRetries });
    this._autoIdempotencyKeys = autoIdempotencyKeys;
    this._onResponse = onResponse;
    this._fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this._userAgent = userAgent();

    this.users = new Users(this);
    this.courses = new Courses(this);
    this.mentors = new Mentors(this);
  }

  /**
   * Send one logical call, with retries, and return the decoded JSON body.
   *
   * @param {string} method
   * @param {string} path
   * @param {{query?: Record<string, unknown>, body?: object,
   *          idempotencyKey?: string | null, signal?: AbortSignal}} [options]
   *   `idempotencyKey` undefined generates one for a POST; null sends none.
   * @returns {Promise<any>}
   * @throws {ApiError} for an error response
   * @throws {ApiConnectionError} when no response came (ApiTimeoutError on a timeout)
   */
  async request(method, path, { query, body, idempotencyKey, signal } = {}) {
    const verb = method.toUpperCase();
    let key = null;
    if (verb === 'POST') {
      key = idempotencyKey === undefined
        ? (this._autoIdempotencyKeys ? globalThis.crypto.randomUUID() : null)
        : idempotencyKey;
    }
    const retryable = verb !== 'POST' || key !== null;
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) {
        url.searchParams.set(name, String(value));
      }
    }

    for (let attempt = 0; ; attempt += 1) {
      const headers = await this._headers();
      if (key !== null) {
        headers['Idempotency-Key'] = key;
      }
      if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
      }
      let delay = null;
      let response;
      try {
        response = await fetchWithTimeout(this._fetch, url.toString(), {
          method: verb,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          redirect: 'manual',
          signal,
        }, this._timeoutMs);
      } catch (error) {
        if (signal?.aborted) {
          throw error;
        }
        delay = retryable ? this._retry.backoff(attempt + 1, null) : null;
        if (delay === null) {
          throw connectionError(verb, path, error);
        }
      }

      if (response !== undefined) {
        const decoded = await decodeJson(response);
        this._report(verb, path, response, attempt, key);
        if (response.ok) {
          return decoded;
        }
        if (retryable && shouldRetryStatus(response.status, decoded)) {
          delay = this._retry.backoff(attempt + 1,
            parseRetryAfter(response.headers.get('retry-after')));
        }
        if (delay === null) {
          throw errorFromResponse(response.status, response.headers, decoded);
        }
      }
      await sleep(delay);
    }
  }

  async _headers() {
    const token = typeof this._credential === 'function'
      ? await this._credential() : this._credential;
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
    if (this._apiVersion) {
      headers['FKOD-Version'] = this._apiVersion;
    }
    if (this._userAgent) {
      headers['User-Agent'] = this._userAgent;
    }
    return headers;
  }

  _report(method, path, response, attempt, key) {
    if (!this._onResponse) {
      return;
    }
    this._onResponse({
      method,
      path,
      status: response.status,
      attempt,
      requestId: response.headers.get('x-request-id'),
      apiVersion: response.headers.get('fkod-version'),
      rateLimit: rateLimitFromHeaders(response.headers),
      idempotencyKey: key,
      replayed: response.headers.get('idempotent-replayed') === 'true',
    });
  }

  /**
   * Yield every item of a list, one page of `query.limit` at a time.
   *
   * @param {string} path
   * @param {Record<string, unknown>} query
   */
  async* _iterate(path, query) {
    let cursor = query.cursor ?? null;
    for (;;) {
      const page = await this.request('GET', path, { query: { ...query, cursor } });
      yield* page.data;
      if (!page.has_more || !page.next_cursor) {
        return;
      }
      cursor = page.next_cursor;
    }
  }
}

function shouldRetryStatus(status, body) {
  if (RETRYABLE_STATUSES.has(status)) {
    return true;
  }
  return status === 409 && body !== null && typeof body === 'object'
    && body.code === IN_PROGRESS_CODE;
}

function connectionError(method, path, error) {
  if (error?.name === 'TimeoutError') {
    return new ApiTimeoutError(`${method} ${path} timed out.`, { cause: error });
  }
  const reason = error?.cause?.code ?? error?.message ?? String(error);
  return new ApiConnectionError(`${method} ${path} failed: ${reason}`, { cause: error });
}

/** `/api/v1/users`: the users in the partner's tenancy. */
class Users {
  /** @param {FkodClient} client */
  constructor(client) {
    this._client = client;
  }

  /**
   * Create a user. `archetype` is one of innovator, explorer, builder, mentor,
   * achiever, collaborator.
   */
  create({ email, name, archetype }, { idempotencyKey, signal } = {}) {
    return this._client.request('POST', '/api/v1/users',
      { body: defined({ email, name, archetype }), idempotencyKey, signal });
  }

  get(userId, { signal } = {}) {
    return this._client.request('GET', `/api/v1/users/${segment(userId)}`, { signal });
  }

  /** Change the given fields of a user this partner created; null clears a field. */
  update(userId, fields, { signal } = {}) {
    return this._client.request('PUT', `/api/v1/users/${segment(userId)}`,
      { body: defined(fields), signal });
  }

  /** Return one page of users, newest first; `limit` is 1 to 100 (default 20). */
  list({ limit, cursor, email } = {}, { signal } = {}) {
    return this._client.request('GET', '/api/v1/users',
      { query: { limit, cursor, email }, signal });
  }

  /** Iterate over every user with `for await`, one page of `limit` at a time. */
  iterate({ limit, email } = {}) {
    return this._client._iterate('/api/v1/users', { limit, email });
  }
}

/** `/api/v1/courses`: the shared catalog and the partner's own courses. */
class Courses {
  /** @param {FkodClient} client */
  constructor(client) {
    this._client = client;
  }

  /** Create a course of the partner's own; `level` is beginner, intermediate or advanced. */
  create({ title, description, level }, { idempotencyKey, signal } = {}) {
    return this._client.request('POST', '/api/v1/courses',
      { body: defined({ title, description, level }), idempotencyKey, signal });
  }

  /** Record that a user in the tenancy completed a course. */
  complete(courseId, { userId }, { idempotencyKey, signal } = {}) {
    return this._client.request('POST', `/api/v1/courses/${segment(courseId)}/complete`,
      { body: { user_id: userId }, idempotencyKey, signal });
  }

  list({ limit, cursor } = {}, { signal } = {}) {
    return this._client.request('GET', '/api/v1/courses', { query: { limit, cursor }, signal });
  }

  iterate({ limit } = {}) {
    return this._client._iterate('/api/v1/courses', { limit });
  }
}

/** `/api/v1/mentors`: the mentor catalog and matches. */
class Mentors {
  /** @param {FkodClient} client */
  constructor(client) {
    this._client = client;
  }

  list({ limit, cursor } = {}, { signal } = {}) {
    return this._client.request('GET', '/api/v1/mentors', { query: { limit, cursor }, signal });
  }

  iterate({ limit } = {}) {
    return this._client._iterate('/api/v1/mentors', { limit });
  }

  /** Match a user in the tenancy with a mentor. */
  match(mentorId, { userId, note }, { idempotencyKey, signal } = {}) {
    return this._client.request('POST', `/api/v1/mentors/${segment(mentorId)}/match`,
      { body: defined({ user_id: userId, note }), idempotencyKey, signal });
  }
}
