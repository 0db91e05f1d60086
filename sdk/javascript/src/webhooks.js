/**
 * Verification of the webhook deliveries the platform signs, with Web Crypto.
 *
 * A delivery carries two signatures over the exact body bytes:
 *
 * - `X-FKOD-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 keyed with the
 *   whole secret string (`whsec_...` as UTF-8) over `"<t>." + body`.
 * - Standard Webhooks: `webhook-id`, `webhook-timestamp` and
 *   `webhook-signature: v1,<base64>`, an HMAC-SHA256 keyed with the
 *   base64-decoded part of the secret after `whsec_` over
 *   `"<id>.<timestamp>." + body`.
 *
 * While a secret is being rotated a header carries one signature per secret,
 * and one match is enough. Signatures are checked with `crypto.subtle.verify`,
 * which compares in constant time.
 */

import { WebhookVerificationError } from './errors.js';

export const SECRET_PREFIX = 'whsec_';
export const DEFAULT_TOLERANCE_SECONDS = 300;
const MAX_HEADER_LENGTH = 2048;
const SIGNATURE_HEADERS = ['webhook-id', 'webhook-timestamp', 'webhook-signature',
  'x-fkod-signature'];
const TIMESTAMP = /^[0-9]{1,15}$/;
const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const encoder = new TextEncoder();

/**
 * Verify a delivery and return its parsed event.
 *
 * @param {Uint8Array | ArrayBuffer} body the raw request body as received, before any
 *   JSON parsing (a Node Buffer is a Uint8Array)
 * @param {Headers | Record<string, string | string[] | undefined>} headers the request's
 *   headers; names are matched case-insensitively
 * @param {string | string[]} secret the endpoint's `whsec_` secret, or several while the
 *   receiver moves from one to the next
 * @param {{toleranceSeconds?: number, now?: number}} [options] `now` in Unix seconds,
 *   default the current time
 * @returns {Promise<{id: string, type: string, created: number, data: object}>}
 * @throws {WebhookVerificationError} with a `reason`
 * @throws {TypeError} for a body that is not bytes or a secret that is not `whsec_` base64
 */
export async function verifyWebhook(body, headers, secret,
  { toleranceSeconds = DEFAULT_TOLERANCE_SECONDS, now } = {}) {
  const payload = toBytes(body);
  const secrets = typeof secret === 'string' ? [secret] : [...secret];
  if (secrets.length === 0) {
    throw new TypeError('Give at least one webhook secret.');
  }
  const found = signatureHeaders(headers);
  const current = now ?? Date.now() / 1000;

  if (found['webhook-signature']) {
    await verifyStandard(payload, found, secrets, toleranceSeconds, current);
  } else if (found['x-fkod-signature']) {
    await verifyFkod(payload, found['x-fkod-signature'], secrets, toleranceSeconds, current);
  } else {
    throw new WebhookVerificationError('missing_signature',
      'The delivery has neither a webhook-signature nor an X-FKOD-Signature header.');
  }

  let event;
  try {
    event = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    throw new WebhookVerificationError('invalid_payload', 'The signed body is not valid JSON.');
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new WebhookVerificationError('invalid_payload', 'The signed body is not a JSON object.');
  }
  return event;
}

function toBytes(body) {
  if (body instanceof Uint8Array) {
    return body;
  }
  if (body instanceof ArrayBuffer) {
    return new Uint8Array(body);
  }
  throw new TypeError('body must be the raw bytes received (Uint8Array, Buffer or '
    + `ArrayBuffer), not ${typeof body}; a string may already differ from what was signed.`);
}

function signatureHeaders(headers) {
  /** @type {Record<string, string>} */
  const found = {};
  const entries = typeof Headers !== 'undefined' && headers instanceof Headers
    ? [...headers.entries()] : Object.entries(headers ?? {});
  for (const [rawName, value] of entries) {
    const name = rawName.toLowerCase();
    if (!SIGNATURE_HEADERS.includes(name) || value === undefined) {
      continue;
    }
    if (name in found || Array.isArray(value)) {
      throw new WebhookVerificationError('malformed_header',
        `The ${name} header appears more than once.`);
    }
    if (typeof value !== 'string' || value.length > MAX_HEADER_LENGTH || /[^\x00-\x7f]/.test(value)) {
      throw new WebhookVerificationError('malformed_header',
        `The ${name} header is not ASCII text of at most ${MAX_HEADER_LENGTH} characters.`);
    }
    found[name] = value;
  }
  return found;
}

async function verifyStandard(payload, found, secrets, toleranceSeconds, now) {
  const messageId = found['webhook-id'];
  const timestamp = found['webhook-timestamp'];
  if (!messageId || !timestamp) {
    throw new WebhookVerificationError('missing_signature',
      'The webhook-id or webhook-timestamp header is missing.');
  }
  if (!/^[\x21-\x7e]+$/.test(messageId) || messageId.includes(',')) {
    throw new WebhookVerificationError('malformed_header',
      'The webhook-id header is not a single message id.');
  }

  const candidates = [];
  for (const entry of found['webhook-signature'].split(' ')) {
    if (entry === '') {
      continue;
    }
    const comma = entry.indexOf(',');
    if (comma < 0) {
      throw new WebhookVerificationError('malformed_header',
        "A webhook-signature entry has no ',' after its version.");
    }
    if (entry.slice(0, comma) !== 'v1') {
      continue;
    }
    const encoded = entry.slice(comma + 1);
    if (!BASE64.test(encoded)) {
      throw new WebhookVerificationError('malformed_header',
        'A v1 signature in webhook-signature is not base64.');
    }
    candidates.push(base64ToBytes(encoded));
  }
  if (candidates.length === 0) {
    throw new WebhookVerificationError('missing_signature',
      'The webhook-signature header has no v1 signature.');
  }
  checkTimestamp(timestamp, toleranceSeconds, now);

  const signed = concat(encoder.encode(`${messageId}.${timestamp}.`), payload);
  const keys = secrets.map(standardKey);
  if (!await anyMatches(keys, signed, candidates)) {
    throw new WebhookVerificationError('signature_mismatch',
      'No v1 signature matches the body, message id and timestamp for the given secret.');
  }
}

async function verifyFkod(payload, header, secrets, toleranceSeconds, now) {
  let timestamp = null;
  const candidates = [];
  for (const item of header.split(',')) {
    const trimmed = item.trim();
    const equals = trimmed.indexOf('=');
    if (equals < 0) {
      throw new WebhookVerificationError('malformed_header',
        "The X-FKOD-Signature header has an item without '='.");
    }
    const name = trimmed.slice(0, equals);
    const value = trimmed.slice(equals + 1);
    if (name === 't') {
      if (timestamp !== null) {
        throw new WebhookVerificationError('malformed_header',
          'The X-FKOD-Signature header has two t= items.');
      }
      timestamp = value;
    } else if (name === 'v1') {
      if (!HEX_SHA256.test(value)) {
        throw new WebhookVerificationError('malformed_header',
          'A v1 signature in X-FKOD-Signature is not 64 hex digits.');
      }
      candidates.push(hexToBytes(value));
    }
  }
  if (timestamp === null) {
    throw new WebhookVerificationError('malformed_header',
      'The X-FKOD-Signature header has no t= item.');
  }
  if (candidates.length === 0) {
    throw new WebhookVerificationError('missing_signature',
      'The X-FKOD-Signature header has no v1 signature.');
  }
  checkTimestamp(timestamp, toleranceSeconds, now);

  const signed = concat(encoder.encode(`${timestamp}.`), payload);
  const keys = secrets.map((secret) => {
    standardKey(secret); // checks the secret's form, as for the other scheme
    return encoder.encode(secret);
  });
  if (!await anyMatches(keys, signed, candidates)) {
    throw new WebhookVerificationError('signature_mismatch',
      'No v1 signature matches the body and timestamp for the given secret.');
  }
}

function standardKey(secret) {
  if (typeof secret !== 'string' || !secret.startsWith(SECRET_PREFIX)) {
    throw new TypeError(`A webhook secret must be a string starting with ${SECRET_PREFIX}.`);
  }
  let encoded = secret.slice(SECRET_PREFIX.length);
  encoded += '='.repeat((4 - (encoded.length % 4)) % 4);
  if (encoded === '' || !BASE64.test(encoded)) {
    throw new TypeError(`The webhook secret after ${SECRET_PREFIX} is not base64.`);
  }
  return base64ToBytes(encoded);
}

function checkTimestamp(text, toleranceSeconds, now) {
  if (!TIMESTAMP.test(text)) {
    throw new WebhookVerificationError('malformed_header',
      'The signature timestamp is not Unix seconds.');
  }
  if (Math.abs(now - Number(text)) > toleranceSeconds) {
    throw new WebhookVerificationError('timestamp_outside_tolerance',
      `The signature timestamp ${text} is more than ${toleranceSeconds} seconds from `
      + 'the current time.');
  }
}

async function anyMatches(keyBytesList, signed, candidates) {
  // Every pair is checked, so the time taken does not show which one matched.
  let matched = false;
  for (const keyBytes of keyBytesList) {
    const key = await globalThis.crypto.subtle.importKey(
      'raw', keyBytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
    for (const candidate of candidates) {
      if (await globalThis.crypto.subtle.verify('HMAC', key, candidate, signed)) {
        matched = true;
      }
    }
  }
  return matched;
}

function concat(first, second) {
  const joined = new Uint8Array(first.length + second.length);
  joined.set(first, 0);
  joined.set(second, first.length);
  return joined;
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index += 1) {
    bytes[index] = binary.charCodeAt(index);
  }
  return bytes;
}

function hexToBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let index = 0; index < bytes.length; index += 1) {
    bytes[index] = Number.parseInt(hex.slice(index * 2, index * 2 + 2), 16);
  }
  return bytes;
}
