// Type declarations of @fkod/sdk, written by hand to match src/.

export declare const VERSION: string;
export declare const API_VERSION: string;
export declare const DEFAULT_TOLERANCE_SECONDS: number;

// Resources -------------------------------------------------------------------

export type Archetype = 'innovator' | 'explorer' | 'builder' | 'mentor' | 'achiever' | 'collaborator';
export type CourseLevel = 'beginner' | 'intermediate' | 'advanced';

export interface User {
  id: string;
  email: string;
  name: string | null;
  archetype: Archetype | null;
  /** ISO 8601 in UTC. */
  created_at: string;
  updated_at: string;
}

export interface Course {
  id: string;
  title: string;
  description: string | null;
  level: CourseLevel | null;
  /** `fkod` for the shared catalog, `partner` for the partner's own courses. */
  owner: 'fkod' | 'partner';
  created_at: string;
  updated_at: string;
}

export interface Completion {
  id: string;
  course_id: string;
  user_id: string;
  status: string;
  completed_at: string;
}

export interface Mentor {
  id: string;
  name: string;
  expertise_areas: string[];
  bio: string | null;
}

export interface MentorMatch {
  id: string;
  mentor_id: string;
  user_id: string;
  note: string | null;
  created_at: string;
}

export interface Page<T> {
  data: T[];
  has_more: boolean;
  /** Pass as `cursor` to get the next page. */
  next_cursor: string | null;
}

export interface WebhookEvent {
  id: string;
  type: string;
  /** Unix seconds. */
  created: number;
  data: Record<string, unknown>;
  request?: { id: string | null };
  [field: string]: unknown;
}

export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in?: number;
  scope?: string;
  refresh_token?: string;
}

// Errors ----------------------------------------------------------------------

export interface FieldError {
  location: string;
  name: string;
  description: string;
}

export interface RateLimit {
  limit: number;
  remaining: number;
  /** Unix seconds when the oldest counted calls leave the window. */
  resetAt: number;
}

export declare class FkodError extends Error {}

export declare class ApiError extends FkodError {
  readonly status: number;
  readonly code: string;
  readonly errors: FieldError[];
  readonly requestId: string | null;
  readonly headers: Headers;
  readonly body: unknown;
  /** Seconds from the Retry-After header, or null. */
  readonly retryAfter: number | null;
  readonly rateLimit: RateLimit | null;
  fieldNames(): string[];
}
export declare class BadRequestError extends ApiError {}
export declare class AuthenticationError extends ApiError {}
export declare class PermissionDeniedError extends ApiError {}
export declare class NotFoundError extends ApiError {}
export declare class ConflictError extends ApiError {}
export declare class RateLimitError extends ApiError {}
export declare class ServerError extends ApiError {}
export declare class ApiConnectionError extends FkodError {}
export declare class ApiTimeoutError extends ApiConnectionError {}

export type WebhookFailureReason =
  | 'missing_signature'
  | 'malformed_header'
  | 'timestamp_outside_tolerance'
  | 'signature_mismatch'
  | 'invalid_payload';

export declare class WebhookVerificationError extends FkodError {
  readonly reason: WebhookFailureReason;
}

export declare class OAuthError extends FkodError {
  /** HTTP status, or 0 for an error read from a callback URL. */
  readonly status: number;
  readonly error: string;
  readonly description: string | null;
  readonly requestId: string | null;
}

// Client ----------------------------------------------------------------------

export interface RetryPolicyOptions {
  maxRetries?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  maxRetryAfterMs?: number;
}

export declare class RetryPolicy {
  constructor(options?: RetryPolicyOptions);
  readonly maxRetries: number;
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly maxRetryAfterMs: number;
  /** Milliseconds to wait before retry `retry` (from 1), or null to give up. */
  backoff(retry: number, retryAfterSeconds: number | null): number | null;
}

export interface ResponseInfo {
  method: string;
  path: string;
  status: number;
  /** 0 for the first attempt, 1 for the first retry, and so on. */
  attempt: number;
  requestId: string | null;
  apiVersion: string | null;
  rateLimit: RateLimit | null;
  idempotencyKey: string | null;
  replayed: boolean;
}

export interface ClientOptions {
  /** The platform's address; default the FKOD_BASE_URL environment variable. */
  baseUrl?: string;
  /** Server side only: the constructor throws in a browser. */
  apiKey?: string;
  accessToken?: string | (() => string | Promise<string>);
  /** Sent as FKOD-Version; null sends none. Default API_VERSION. */
  apiVersion?: string | null;
  /** Per attempt; default 30000. */
  timeoutMs?: number;
  maxRetries?: number;
  retry?: RetryPolicy;
  autoIdempotencyKeys?: boolean;
  onResponse?: (info: ResponseInfo) => void;
  fetch?: typeof fetch;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface PostOptions extends CallOptions {
  /** Undefined generates one; null sends none, and the call is then not retried. */
  idempotencyKey?: string | null;
}

export interface RequestOptions extends PostOptions {
  query?: Record<string, string | number | boolean | null | undefined>;
  body?: object;
}

export declare class FkodClient {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;
  readonly users: Users;
  readonly courses: Courses;
  readonly mentors: Mentors;
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;
}

export interface Users {
  create(fields: { email: string; name?: string | null; archetype?: Archetype | null },
    options?: PostOptions): Promise<User>;
  get(userId: string, options?: CallOptions): Promise<User>;
  update(userId: string,
    fields: { email?: string; name?: string | null; archetype?: Archetype | null },
    options?: CallOptions): Promise<User>;
  list(query?: { limit?: number; cursor?: string | null; email?: string },
    options?: CallOptions): Promise<Page<User>>;
  iterate(query?: { limit?: number; email?: string }): AsyncGenerator<User, void, undefined>;
}

export interface Courses {
  create(fields: { title: string; description?: string | null; level?: CourseLevel | null },
    options?: PostOptions): Promise<Course>;
  complete(courseId: string, fields: { userId: string }, options?: PostOptions):
    Promise<Completion>;
  list(query?: { limit?: number; cursor?: string | null }, options?: CallOptions):
    Promise<Page<Course>>;
  iterate(query?: { limit?: number }): AsyncGenerator<Course, void, undefined>;
}

export interface Mentors {
  list(query?: { limit?: number; cursor?: string | null }, options?: CallOptions):
    Promise<Page<Mentor>>;
  iterate(query?: { limit?: number }): AsyncGenerator<Mentor, void, undefined>;
  match(mentorId: string, fields: { userId: string; note?: string | null },
    options?: PostOptions): Promise<MentorMatch>;
}

// Webhooks --------------------------------------------------------------------

export declare function verifyWebhook(
  body: Uint8Array | ArrayBuffer,
  headers: Headers | Record<string, string | string[] | undefined>,
  secret: string | string[],
  options?: { toleranceSeconds?: number; now?: number },
): Promise<WebhookEvent>;

// OAuth -----------------------------------------------------------------------

export interface AuthorizationRequest {
  url: string;
  state: string;
  codeVerifier: string;
  codeChallenge: string;
}

export declare function generateCodeVerifier(): string;
export declare function codeChallengeS256(verifier: string): Promise<string>;
export declare function createPkcePair(): Promise<{ codeVerifier: string; codeChallenge: string }>;

export interface OAuthClientOptions {
  baseUrl?: string;
  clientId: string;
  /** Confidential applications on a server only: the constructor throws in a browser. */
  clientSecret?: string;
  redirectUri?: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export declare class OAuthClient {
  constructor(options: OAuthClientOptions);
  readonly baseUrl: string;
  readonly clientId: string;
  authorizationRequest(options: { scopes: string | string[]; redirectUri?: string;
    state?: string }): Promise<AuthorizationRequest>;
  parseCallback(callbackUrl: string | URL, options: { expectedState: string }): string;
  exchangeCode(code: string, options: { codeVerifier: string; redirectUri?: string }):
    Promise<TokenResponse>;
  refresh(refreshToken: string, options?: { scopes?: string | string[] }):
    Promise<TokenResponse>;
  clientCredentials(options?: { scopes?: string | string[] }): Promise<TokenResponse>;
  revoke(token: string, options?: { tokenTypeHint?: 'access_token' | 'refresh_token' }):
    Promise<void>;
  metadata(): Promise<Record<string, unknown>>;
}
