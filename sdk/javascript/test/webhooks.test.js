import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import { WebhookVerificationError, verifyWebhook } from '../src/index.js';
import { environment } from './helpers.js';

const STANDARD = ['webhook-id', 'webhook-timestamp', 'webhook-signature'];

function sample() {
  const env = environment();
  const signed = JSON.parse(env.FKOD_SIGNED_WEBHOOK);
  return { secret: env.FKOD_WEBHOOK_SECRET, body: Buffer.from(signed.body, 'utf8'),
    headers: signed.headers, timestamp: signed.timestamp, text: signed.body };
}

function fkodOnly(headers) {
  return Object.fromEntries(Object.entries(headers)
    .filter(([name]) => !STANDARD.includes(name.toLowerCase())));
}

function otherSecret() {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

async function reasonOf(promise) {
  const error = await promise.catch((caught) => caught);
  assert.ok(error instanceof WebhookVerificationError, String(error));
  return error.reason;
}

test('platform-signed delivery verifies', async () => {
  const { secret, body, headers } = sample();

  const event = await verifyWebhook(body, headers, secret);

  assert.equal(event.id, 'evt_sdk_sample');
  assert.equal(event.type, 'user.created');
  assert.deepEqual(event.data, { id: 'user_1' });
});

test('X-FKOD-Signature alone verifies', async () => {
  const { secret, body, headers } = sample();

  assert.equal((await verifyWebhook(body, fkodOnly(headers), secret)).id, 'evt_sdk_sample');
});

test('Headers object and upper-case names are accepted', async () => {
  const { secret, body, headers } = sample();
  const upper = Object.fromEntries(Object.entries(headers)
    .map(([name, value]) => [name.toUpperCase(), value]));

  assert.equal((await verifyWebhook(body, new Headers(headers), secret)).id, 'evt_sdk_sample');
  assert.equal((await verifyWebhook(body, upper, secret)).id, 'evt_sdk_sample');
});

test('ArrayBuffer body verifies', async () => {
  const { secret, body, headers } = sample();
  const buffer = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);

  assert.equal((await verifyWebhook(buffer, headers, secret)).id, 'evt_sdk_sample');
});

for (const scheme of ['standard', 'fkod']) {
  test(`tampered body is a mismatch (${scheme})`, async () => {
    const { secret, text, headers } = sample();
    const chosen = scheme === 'fkod' ? fkodOnly(headers) : headers;
    const tampered = Buffer.from(text.replace('user_1', 'user_2'));

    assert.equal(await reasonOf(verifyWebhook(tampered, chosen, secret)), 'signature_mismatch');
  });

  test(`wrong secret is a mismatch (${scheme})`, async () => {
    const { body, headers } = sample();
    const chosen = scheme === 'fkod' ? fkodOnly(headers) : headers;

    assert.equal(await reasonOf(verifyWebhook(body, chosen, otherSecret())),
      'signature_mismatch');
  });
}

test('old and future timestamps are outside tolerance', async () => {
  const { secret, body, headers, timestamp } = sample();

  for (const offset of [301, -301]) {
    assert.equal(await reasonOf(verifyWebhook(body, headers, secret,
      { now: timestamp + offset })), 'timestamp_outside_tolerance');
  }
  assert.equal((await verifyWebhook(body, headers, secret, { now: timestamp + 300 })).id,
    'evt_sdk_sample');
});

test('any of several secrets verifies', async () => {
  const { secret, body, headers } = sample();

  assert.equal((await verifyWebhook(body, headers, [otherSecret(), secret])).id,
    'evt_sdk_sample');
});

test('missing headers are missing_signature', async () => {
  const { secret, body } = sample();

  assert.equal(await reasonOf(verifyWebhook(body, { 'content-type': 'application/json' },
    secret)), 'missing_signature');
});

test('malformed headers are malformed_header', async () => {
  const { secret, body } = sample();
  const cases = [
    { 'X-FKOD-Signature': 't=1,v1' },
    { 'X-FKOD-Signature': `v1=${'0'.repeat(64)}` },
    { 'X-FKOD-Signature': `t=now,v1=${'0'.repeat(64)}` },
    { 'webhook-id': 'evt_1', 'webhook-timestamp': '1', 'webhook-signature': 'v1' },
    { 'webhook-id': 'evt_1', 'webhook-timestamp': '1', 'webhook-signature': 'v1,%%%' },
  ];

  for (const headers of cases) {
    assert.equal(await reasonOf(verifyWebhook(body, headers, secret)), 'malformed_header',
      JSON.stringify(headers));
  }
});

test('string body is refused', async () => {
  const { secret, text, headers } = sample();

  await assert.rejects(verifyWebhook(text, headers, secret), TypeError);
});
