import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  API_VERSION, AuthenticationError, BadRequestError, ConflictError, FkodClient, NotFoundError,
  OAuthClient,
} from '../src/index.js';
import { environment, uniqueEmail } from './helpers.js';

function client(options = {}) {
  const env = environment();
  return new FkodClient({ baseUrl: env.FKOD_BASE_URL, apiKey: env.FKOD_API_KEY, ...options });
}

test('create, get and update a user', async () => {
  const api = client();
  const email = uniqueEmail();

  const created = await api.users.create({ email, name: 'Ada', archetype: 'builder' });
  const fetched = await api.users.get(created.id);
  const updated = await api.users.update(created.id, { name: 'Ada Lovelace', archetype: null });

  assert.match(created.id, /^user_[0-9]+$/);
  assert.equal(created.email, email);
  assert.equal(created.archetype, 'builder');
  assert.deepEqual(fetched, created);
  assert.equal(updated.id, created.id);
  assert.equal(updated.name, 'Ada Lovelace');
  assert.equal(updated.archetype, null);
  assert.equal((await api.users.get(created.id)).name, 'Ada Lovelace');
});

test('iterate follows next_cursor across pages', async () => {
  const api = client();
  const created = new Set();
  for (let index = 0; index < 5; index += 1) {
    created.add((await api.users.create({ email: uniqueEmail() })).id);
  }
  const pages = [];
  const counting = client({ onResponse: (info) => pages.push(info) });

  const listed = [];
  for await (const user of counting.users.iterate({ limit: 2 })) {
    listed.push(user.id);
  }

  for (const id of created) {
    assert.ok(listed.includes(id), `${id} missing from the iteration`);
  }
  assert.equal(new Set(listed).size, listed.length);
  assert.ok(pages.length >= 3, `only ${pages.length} pages requested`);
});

test('list returns one page and a cursor', async () => {
  const api = client();
  for (let index = 0; index < 3; index += 1) {
    await api.users.create({ email: uniqueEmail() });
  }

  const first = await api.users.list({ limit: 2 });
  const second = await api.users.list({ limit: 2, cursor: first.next_cursor });

  assert.equal(first.data.length, 2);
  assert.equal(first.has_more, true);
  assert.ok(first.next_cursor);
  const firstIds = new Set(first.data.map((user) => user.id));
  assert.ok(second.data.every((user) => !firstIds.has(user.id)));
});

test('validation error names the field', async () => {
  const error = await client().users.create({ email: 'not-an-email' }).catch((caught) => caught);

  assert.ok(error instanceof BadRequestError, String(error));
  assert.equal(error.status, 400);
  assert.equal(error.code, 'validation_failed');
  assert.ok(error.fieldNames().includes('email'));
  assert.equal(error.errors[0].location, 'body');
  assert.ok(error.requestId);
});

test('unknown user is not found', async () => {
  const error = await client().users.get('user_999999999').catch((caught) => caught);

  assert.ok(error instanceof NotFoundError, String(error));
  assert.equal(error.status, 404);
  assert.equal(error.code, 'not_found');
  assert.ok(error.requestId);
});

test('invalid key is unauthorized', async () => {
  const env = environment();
  const bad = new FkodClient({ baseUrl: env.FKOD_BASE_URL, apiKey: `sk_test_${'x'.repeat(40)}` });

  const error = await bad.users.list().catch((caught) => caught);

  assert.ok(error instanceof AuthenticationError, String(error));
  assert.equal(error.status, 401);
  assert.ok(error.requestId);
});

test('same idempotency key returns the same user', async () => {
  const seen = [];
  const api = client({ onResponse: (info) => seen.push(info) });
  const email = uniqueEmail();

  const first = await api.users.create({ email }, { idempotencyKey: `sdk-js-${email}` });
  const second = await api.users.create({ email }, { idempotencyKey: `sdk-js-${email}` });

  assert.equal(second.id, first.id);
  assert.deepEqual(seen.map((info) => info.replayed), [false, true]);
});

test('each POST gets its own generated idempotency key', async () => {
  const seen = [];
  const api = client({ onResponse: (info) => seen.push(info) });

  await api.users.create({ email: uniqueEmail() });
  await api.users.create({ email: uniqueEmail() });

  assert.ok(seen[0].idempotencyKey);
  assert.ok(seen[1].idempotencyKey);
  assert.notEqual(seen[0].idempotencyKey, seen[1].idempotencyKey);
});

test('requests pin the API version and name the SDK', async () => {
  const sent = [];
  const recording = (url, init) => {
    sent.push(init.headers);
    return fetch(url, init);
  };
  const seen = [];
  const api = client({ fetch: recording, onResponse: (info) => seen.push(info) });

  await api.mentors.list({ limit: 1 });

  assert.equal(sent[0]['FKOD-Version'], API_VERSION);
  assert.match(sent[0]['User-Agent'], /^fkod-sdk-javascript\/0\.1\.0 /);
  assert.equal(seen[0].apiVersion, API_VERSION);
});

test('courses: create, complete, and a second completion conflicts', async () => {
  const api = client();
  const user = await api.users.create({ email: uniqueEmail() });
  const course = await api.courses.create({ title: 'Graph theory', level: 'advanced' });

  const completion = await api.courses.complete(course.id, { userId: user.id });
  const again = await api.courses.complete(course.id, { userId: user.id })
    .catch((caught) => caught);

  assert.equal(course.owner, 'partner');
  assert.equal(completion.course_id, course.id);
  assert.equal(completion.user_id, user.id);
  assert.ok(again instanceof ConflictError, String(again));
  assert.equal(again.code, 'already_completed');
});

test('mentors: list and match', async () => {
  const api = client();
  const mentors = [];
  for await (const mentor of api.mentors.iterate({ limit: 2 })) {
    mentors.push(mentor);
  }
  assert.ok(mentors.length > 0, 'the test-mode catalog has no mentors');
  const user = await api.users.create({ email: uniqueEmail() });

  const match = await api.mentors.match(mentors[0].id, { userId: user.id, note: 'Graphs' });

  assert.ok(Array.isArray(mentors[0].expertise_areas));
  assert.equal(match.mentor_id, mentors[0].id);
  assert.equal(match.user_id, user.id);
  assert.equal(match.note, 'Graphs');
});

test('missing base URL is an error', () => {
  const saved = process.env.FKOD_BASE_URL;
  delete process.env.FKOD_BASE_URL;
  try {
    assert.throws(() => new FkodClient({ apiKey: 'sk_test_x' }), /FKOD_BASE_URL/);
  } finally {
    process.env.FKOD_BASE_URL = saved;
  }
});

test('base URL and key are read from the environment', async () => {
  environment();
  const api = new FkodClient();

  const page = await api.users.list({ limit: 1 });

  assert.ok(Array.isArray(page.data));
});

test('API key is refused in a browser', () => {
  globalThis.window = { document: {} };
  try {
    assert.throws(() => new FkodClient({ baseUrl: 'https://fkod.example', apiKey: 'sk_test_x' }),
      /must not be used in a browser/);
    assert.throws(() => new OAuthClient({ baseUrl: 'https://fkod.example', clientId: 'app',
      clientSecret: 'secret' }), /must not be used in a browser/);
    const api = new FkodClient({ baseUrl: 'https://fkod.example', accessToken: 'token' });
    assert.equal(api.baseUrl, 'https://fkod.example');
  } finally {
    delete globalThis.window;
  }
});
