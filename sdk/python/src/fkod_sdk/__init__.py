"""Python SDK of the F-KOD API."""

from fkod_sdk._config import NOT_GIVEN, ResponseInfo, RetryPolicy
from fkod_sdk._version import API_VERSION, VERSION
from fkod_sdk.async_client import AsyncClient
from fkod_sdk.client import Client
from fkod_sdk.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    FkodError,
    NotFoundError,
    OAuthError,
    PermissionDeniedError,
    RateLimit,
    RateLimitError,
    ServerError,
    WebhookVerificationError,
)
from fkod_sdk.oauth import OAuthClient, code_challenge_s256, generate_code_verifier
from fkod_sdk.types import (
    AuthorizationRequest,
    Completion,
    Course,
    Mentor,
    MentorMatch,
    Page,
    TokenResponse,
    User,
    WebhookEvent,
)
from fkod_sdk.webhooks import verify_webhook

__version__ = VERSION

__all__ = [
    "API_VERSION",
    "NOT_GIVEN",
    "VERSION",
    "ApiConnectionError",
    "ApiError",
    "ApiTimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "AuthorizationRequest",
    "BadRequestError",
    "Client",
    "Completion",
    "ConflictError",
    "Course",
    "FieldError",
    "FkodError",
    "Mentor",
    "MentorMatch",
    "NotFoundError",
    "OAuthClient",
    "OAuthError",
    "Page",
    "PermissionDeniedError",
    "RateLimit",
    "RateLimitError",
    "ResponseInfo",
    "RetryPolicy",
    "ServerError",
    "TokenResponse",
    "User",
    "WebhookEvent",
    "WebhookVerificationError",
    "code_challenge_s256",
    "generate_code_verifier",
    "verify_webhook",
]
