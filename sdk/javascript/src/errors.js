/**
 * Errors thrown by the SDK.
 *
 * Every error response of the API is one JSON envelope:
 * `{"status", "code", "message", "errors": [{"location", "name", "description"}], "request_id"}`.
 * {@link ApiError} carries each of those fields, and its subclasses let callers
 * catch one HTTP status with `instanceof`.
 */

/** Base class of every error the SDK throws. */
export class FkodError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Read the rate-limit headers of a gateway response, for its tightest window.
 *
 * @param {Headers} headers
 * @returns {{limit: number, remaining: number, resetAt: number} | null}
 */
export function rateLimitFromHeaders(headers) {
  const limit = Number.parseInt(headers.get('x-ratelimit-limit') ?? '', 10);
  const remaining = Number.parseInt(headers.get('x-ratelimit-remaining') ?? '', 10);
  const resetAt = Number.parseInt(headers.get('x-ratelimit-reset') ?? '', 10);
  if ([limit, remaining, resetAt].some(Number.isNaN)) {
    return null;
  }
  return { limit, remaining, resetAt };
}

/**
 * Return the seconds of a `Retry-After` header, or null when absent or not a number.
 * The platform sends whole seconds; an HTTP date counts as absent.
 *
 * @param {string | null | undefined} value
 * @returns {number | null}
 */
export function parseRetryAfter(value) {
  if (value === null || value === undefined || value.trim() === '') {
    return null;
  }
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** An error response from the API. */
export class ApiError extends FkodError {
  /**
   * @param {{status: number, code: string, message: string,
   *          errors: Array<{location: string, name: string, description: string}>,
   *          requestId: string | null, headers: Headers, body: unknown}} fields
   */
  constructor({ status, code, message, errors, requestId, headers, body }) {
    super(message);
    this.status = status;
    this.code = code;
    this.errors = errors;
    this.requestId = requestId;
    this.headers = headers;
    this.body = body;
    this.retryAfter = parseRetryAfter(headers.get('retry-after'));
    this.rateLimit = rateLimitFromHeaders(headers);
  }

  /** @returns {string[]} the names of the invalid fields, in the order the API listed them */
  fieldNames() {
    return this.errors.map((error) => error.name);
  }
}

/** 400 or 422: the request is invalid; `errors` names the fields. */
export class BadRequestError extends ApiError {}
/** 401: the API key or access token is missing, invalid, expired or revoked. */
export class AuthenticationError extends ApiError {}
/** 403: the credential lacks a scope or the caller may not act on the resource. */
export class PermissionDeniedError extends ApiError {}
/** 404: no such resource in the caller's tenancy. */
export class NotFoundError extends ApiError {}
/** 409: the request conflicts with the current state, such as a duplicate email. */
export class ConflictError extends ApiError {}
/** 429: a rate limit rejected the call. `retryAfter` is the wait in seconds. */
export class RateLimitError extends ApiError {}
/** 5xx: the platform failed or is unavailable. */
export class ServerError extends ApiError {}

/** The request got no response: connection refused or reset, DNS failure, CORS rejection. */
export class ApiConnectionError extends FkodError {}
/** The request timed out. */
export class ApiTimeoutError extends ApiConnectionError {}

/**
 * A webhook delivery that failed verification. `reason` is one of
 * `missing_signature`, `malformed_header`, `timestamp_outside_tolerance`,
 * `signature_mismatch` and `invalid_payload` (a correctly signed body that is
 * not a JSON object).
 */
export class WebhookVerificationError extends FkodError {
  /** @param {string} reason @param {string} message */
  constructor(reason, message) {
    super(message);
    this.reason = reason;
  }
}

/** An error response of the OAuth endpoints (RFC 6749 section 5.2), or of a callback. */
export class OAuthError extends FkodError {
  /**
   * @param {{status: number, error: string, description: string | null,
   *          requestId: string | null}} fields
   */
  constructor({ status, error, description, requestId }) {
    super(`${status} ${error}: ${description ?? 'no description'}`);
    this.status = status;
    this.error = error;
    this.description = description;
    this.requestId = requestId;
  }
}

const ERROR_CLASSES = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  422: BadRequestError,
  429: RateLimitError,
};

/**
 * Build the ApiError subclass for an error response and its decoded JSON body.
 * A body that is not the envelope still gives an error with the status, the
 * code `http_error` and the request id header.
 *
 * @param {number} status
 * @param {Headers} headers
 * @param {unknown} body
 * @returns {ApiError}
 */
export function errorFromResponse(status, headers, body) {
  const envelope = body !== null && typeof body === 'object' && !Array.isArray(body) ? body : {};
  const rawErrors = Array.isArray(envelope.errors) ? envelope.errors : [];
  const errors = rawErrors
    .filter((item) => item !== null && typeof item === 'object')
    .map((item) => ({
      location: String(item.location ?? ''),
      name: String(item.name ?? ''),
      description: String(item.description ?? ''),
    }));
  const ErrorClass = status >= 500 ? ServerError : (ERROR_CLASSES[status] ?? ApiError);
  return new ErrorClass({
    status,
    code: String(envelope.code || 'http_error'),
    message: String(envelope.message || `The API returned HTTP ${status}.`),
    errors,
    requestId: headers.get('x-request-id') ?? envelope.request_id ?? null,
    headers,
    body,
  });
}
