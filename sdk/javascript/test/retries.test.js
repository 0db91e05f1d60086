// Retries on 429 with Retry-After, against keys with a rate limit of their own.
// A key allowing one call per 2 s makes the SDK wait and retry. A key allowing
// one call per 60 s gives a 429 the SDK must not wait for, whatever the load.

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';

import {
  ApiConnectionError, ApiTimeoutError, FkodClient, RateLimitError, RetryPolicy,
} from '../src/index.js';
import { environment, partnerPost, uniqueEmail } from './helpers.js';

const MAX_CALLS = 5;

async function limitedKey(windowSeconds) {
  const created = await partnerPost('/api/partners/api-keys', {
    key_name: 'sdk rate limit', scopes: ['users:read', 'users:write'], mode: 'test',
    rate_limit: 1, rate_limit_window: windowSeconds,
  });
  return created.key;
}

function recordingClient(key, options = {}) {
  const responses = [];
  const api = new FkodClient({
    baseUrl: environment().FKOD_BASE_URL, apiKey: key,
    onResponse: (info) => responses.push({ at: performance.now(), info }), ...options,
  });
  return { api, responses };
}

async function callUntilRejected(responses, call) {
  for (let calls = 0; calls < MAX_CALLS; calls += 1) {
    await call();
    const index = responses.findIndex(({ info }) => info.status === 429);
    if (index >= 0) {
      return index;
    }
  }
  throw new Error(`No call was rate limited in ${MAX_CALLS} calls.`);
}

test('GET waits for Retry-After, then succeeds', async () => {
  const { api, responses } = recordingClient(await limitedKey(2));

  const index = await callUntilRejected(responses, () => api.users.list({ limit: 1 }));

  const rejected = responses[index];
  const retried = responses[index + 1];
  assert.equal(rejected.info.rateLimit.remaining, 0);
  assert.equal(retried.info.status, 200);
  assert.equal(retried.info.attempt, rejected.info.attempt + 1);
  assert.ok(retried.at - rejected.at >= 1000, `retried after ${retried.at - rejected.at} ms`);
});

test('POST retry reuses its idempotency key', async () => {
  const { api, responses } = recordingClient(await limitedKey(2));

  const index = await callUntilRejected(responses,
    () => api.users.create({ email: uniqueEmail() }));

  const rejected = responses[index].info;
  const retried = responses[index + 1].info;
  assert.equal(rejected.method, 'POST');
  assert.equal(retried.status, 201);
  assert.ok(rejected.idempotencyKey);
  assert.equal(retried.idempotencyKey, rejected.idempotencyKey);
});

test('without retries the error carries Retry-After', async () => {
  const { api } = recordingClient(await limitedKey(60), { maxRetries: 0 });
  await api.users.list({ limit: 1 });

  const error = await api.users.list({ limit: 1 }).catch((caught) => caught);

  assert.ok(error instanceof RateLimitError, String(error));
  assert.equal(error.status, 429);
  assert.equal(error.code, 'rate_limited');
  assert.ok(error.retryAfter > 0, String(error.retryAfter));
  assert.ok(error.retryAfter <= 60, String(error.retryAfter));
  assert.ok(error.rateLimit);
  assert.ok(error.requestId);
});

test('POST without an idempotency key is not retried', async () => {
  const { api, responses } = recordingClient(await limitedKey(60), {
    autoIdempotencyKeys: false, retry: new RetryPolicy({ maxRetryAfterMs: 120000 }),
  });
  await api.users.list({ limit: 1 });

  const error = await api.users.create({ email: uniqueEmail() }).catch((caught) => caught);

  assert.ok(error instanceof RateLimitError, String(error));
  const posts = responses.filter(({ info }) => info.method === 'POST')
    .map(({ info }) => [info.status, info.attempt, info.idempotencyKey]);
  assert.deepEqual(posts, [[429, 0, null]]);
});

test('Retry-After above the cap is thrown at once', async () => {
  const { api, responses } = recordingClient(await limitedKey(60), {
    retry: new RetryPolicy({ maxRetries: 3, maxRetryAfterMs: 500 }),
  });
  await api.users.list({ limit: 1 });

  await assert.rejects(api.users.list({ limit: 1 }), RateLimitError);

  assert.deepEqual(responses.map(({ info }) => info.status), [200, 429]);
});

test('connection refused is retried, then thrown', async () => {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  const api = new FkodClient({ baseUrl: `http://127.0.0.1:${port}`, apiKey: 'sk_test_x',
    retry: new RetryPolicy({ maxRetries: 2, initialDelayMs: 50 }) });

  const started = performance.now();
  const error = await api.users.list().catch((caught) => caught);

  assert.ok(error instanceof ApiConnectionError, String(error));
  // Two waits of at least half of 50 ms and of 100 ms.
  assert.ok(performance.now() - started >= 75);
});

test('backoff grows and stays capped', () => {
  const policy = new RetryPolicy({ maxRetries: 10, initialDelayMs: 1000, maxDelayMs: 4000 });

  const waits = [1, 2, 3, 4, 5].map((retry) => policy.backoff(retry, null));

  assert.ok(waits[0] >= 500);
  assert.ok(waits[0] <= 1000);
  assert.ok(waits[1] >= 1000);
  assert.ok(waits[1] <= 2000);
  assert.ok(waits.slice(3).every((wait) => wait >= 2000 && wait <= 4000));
  assert.equal(policy.backoff(11, null), null);
  assert.equal(policy.backoff(1, 3), 3000);
  assert.equal(policy.backoff(1, 61), null);
});

test('silent server times out after a retry', async () => {
  const sockets = [];
  const silent = createServer((socket) => sockets.push(socket));
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address();
  const api = new FkodClient({ baseUrl: `http://127.0.0.1:${port}`, apiKey: 'sk_test_x',
    timeoutMs: 300, retry: new RetryPolicy({ maxRetries: 1, initialDelayMs: 50 }) });

  const started = performance.now();
  try {
    const error = await api.users.get('user_1').catch((caught) => caught);

    assert.ok(error instanceof ApiTimeoutError, String(error));
    assert.equal(sockets.length, 2);
    assert.ok(performance.now() - started >= 600);
  } finally {
    sockets.forEach((socket) => socket.destroy());
    await new Promise((resolve) => silent.close(resolve));
  }
});
