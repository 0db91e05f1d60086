/**
 * Request rules shared by the client and the OAuth helper: configuration from
 * the environment, the user agent, retry waits and the detection of browsers.
 */

import { VERSION } from './version.js';

/** Statuses retried when the request may be repeated: rate limited, unavailable. */
export const RETRYABLE_STATUSES = new Set([429, 503]);
/** A 409 with this code means a request with the same Idempotency-Key is still running. */
export const IN_PROGRESS_CODE = 'idempotency_request_in_progress';

/** @returns {boolean} whether the code runs in a web page or a web worker */
export function isBrowser() {
  return (typeof window !== 'undefined' && typeof window.document !== 'undefined')
    || (typeof self !== 'undefined' && typeof self.importScripts === 'function');
}

/** @param {string} name @returns {string | undefined} */
export function environmentVariable(name) {
  if (typeof process === 'undefined' || !process.env) {
    return undefined;
  }
  return process.env[name] || undefined;
}

/**
 * Return the User-Agent to send, or null in a browser, which sets its own and
 * where the platform's CORS rules do not allow the header.
 *
 * @returns {string | null}
 */
export function userAgent() {
  if (isBrowser() || typeof process === 'undefined' || !process.versions?.node) {
    return null;
  }
  return `fkod-sdk-javascript/${VERSION} (Node ${process.versions.node})`;
}

/**
 * @param {string | undefined} given
 * @returns {string} the base URL without a trailing slash
 */
export function resolveBaseUrl(given) {
  const url = given ?? environmentVariable('FKOD_BASE_URL');
  if (!url) {
    throw new TypeError('baseUrl is missing: pass baseUrl or set FKOD_BASE_URL.');
  }
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`baseUrl must be an http or https URL, got ${JSON.stringify(url)}.`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TypeError(`baseUrl must be an http or https URL, got ${JSON.stringify(url)}.`);
  }
  return url.replace(/\/+$/, '');
}

/**
 * Retry settings for 429, 503 and connection failures.
 *
 * The wait before retry `n` (from 1) is `Retry-After` when the response sent
 * one, otherwise a random time between half and all of
 * `min(initialDelayMs * 2 ** (n - 1), maxDelayMs)`. A `Retry-After` longer than
 * `maxRetryAfterMs` is not waited for: the error is thrown at once.
 */
export class RetryPolicy {
  /**
   * @param {{maxRetries?: number, initialDelayMs?: number, maxDelayMs?: number,
   *          maxRetryAfterMs?: number}} [options]
   */
  constructor({ maxRetries = 2, initialDelayMs = 500, maxDelayMs = 8000,
    maxRetryAfterMs = 60000 } = {}) {
    this.maxRetries = maxRetries;
    this.initialDelayMs = initialDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.maxRetryAfterMs = maxRetryAfterMs;
  }

  /**
   * @param {number} retry the retry number, from 1
   * @param {number | null} retryAfterSeconds the response's Retry-After, if any
   * @returns {number | null} milliseconds to wait, or null to give up
   */
  backoff(retry, retryAfterSeconds) {
    if (retry > this.maxRetries) {
      return null;
    }
    if (retryAfterSeconds !== null) {
      const wait = retryAfterSeconds * 1000;
      return wait <= this.maxRetryAfterMs ? wait : null;
    }
    const ceiling = Math.min(this.initialDelayMs * 2 ** (retry - 1), this.maxDelayMs);
    return ceiling * (0.5 + Math.random() / 2);
  }
}

/** @param {number} ms @returns {Promise<void>} */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Decode a JSON body, or return null for an empty or non-JSON body.
 *
 * @param {Response} response
 * @returns {Promise<unknown>}
 */
export async function decodeJson(response) {
  const text = await response.text();
  if (!text) {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * Run `fetch` with a timeout; a timeout rejects with a DOMException named TimeoutError.
 *
 * @param {typeof fetch} fetchImpl
 * @param {string} url
 * @param {RequestInit} init
 * @param {number} timeoutMs
 * @returns {Promise<Response>}
 */
export async function fetchWithTimeout(fetchImpl, url, init, timeoutMs) {
  const signal = init.signal
    ? AbortSignal.any([init.signal, AbortSignal.timeout(timeoutMs)])
    : AbortSignal.timeout(timeoutMs);
  return fetchImpl(url, { ...init, signal });
}
