// Shared set-up of the SDK tests: the live server's address and credentials from
// the environment, as the platform's tests/sdk driver sets them, and calls to the
// partner API with the owner's login token.

import { randomBytes } from 'node:crypto';

const REQUIRED = ['FKOD_BASE_URL', 'FKOD_API_KEY', 'FKOD_LOGIN_TOKEN', 'FKOD_WEBHOOK_SECRET',
  'FKOD_SIGNED_WEBHOOK'];

/** @returns {Record<string, string>} the variables, or throws naming the missing ones */
export function environment() {
  const missing = REQUIRED.filter((name) => !process.env[name]);
  if (missing.length > 0) {
    throw new Error(`These tests need a running server; set ${missing.join(', ')} `
      + '(the platform\'s tests/sdk/test_javascript_sdk.py sets them all).');
  }
  return Object.fromEntries(REQUIRED.map((name) => [name, process.env[name]]));
}

export function uniqueEmail() {
  return `learner-${randomBytes(6).toString('hex')}@sdk.example`;
}

/** POST to the partner API with the login token; return the created object. */
export async function partnerPost(path, body) {
  const env = environment();
  const response = await fetch(env.FKOD_BASE_URL + path, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env.FKOD_LOGIN_TOKEN}`,
      'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== 201) {
    throw new Error(`POST ${path} returned ${response.status}: ${text}`);
  }
  return JSON.parse(text);
}
