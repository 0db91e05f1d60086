/** JavaScript SDK of the F-KOD API, for Node 20 and newer and for browsers. */

export { FkodClient } from './client.js';
export {
  ApiConnectionError, ApiError, ApiTimeoutError, AuthenticationError, BadRequestError,
  ConflictError, FkodError, NotFoundError, OAuthError, PermissionDeniedError, RateLimitError,
  ServerError, WebhookVerificationError,
} from './errors.js';
export { RetryPolicy } from './http.js';
export {
  OAuthClient, codeChallengeS256, createPkcePair, generateCodeVerifier,
} from './oauth.js';
export { API_VERSION, VERSION } from './version.js';
export { DEFAULT_TOLERANCE_SECONDS, verifyWebhook } from './webhooks.js';
