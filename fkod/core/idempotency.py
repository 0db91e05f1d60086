"""Idempotency-Key support for the POST operations of the JSON API.

A caller makes a POST safe to retry by sending ``Idempotency-Key`` with 1 to
255 printable ASCII characters. The first request with a key runs the
operation and stores its response. A retry with the same key and the same
request gets the stored status, headers and body with ``Idempotent-Replayed:
true``, and the operation does not run again.

Rules:

* Keys belong to the caller: ``key:<api key id>`` for gateway calls and
  ``partner:<partner id>`` for member calls, so two partners, or two API keys,
  can use the same key independently. Anonymous operations (sign-up, login)
  and methods other than POST ignore the header.
* The key is claimed after the credential, scope, rate-limit, query and body
  checks pass. A request that those checks reject is not stored: sent again,
  it gets the same error, and the key stays free for a corrected request.
* The same request means the same method, path with query string, and body
  bytes (compared through SHA-256). The key sent with another request is a
  422 ``idempotency_key_reused``.
* A retry while the first request still runs is a 409
  ``idempotency_request_in_progress`` with ``Retry-After: 1``. A request
  unfinished after ``fkod.idempotency.in_progress_timeout_seconds`` is treated
  as abandoned, and the next retry runs the operation.
* 2xx responses, and 4xx responses other than 409 and 429, are replayed for
  ``fkod.idempotency.ttl_hours``. A 4xx raised by the operation rolls the
  request's transaction back, and is stored after it in a transaction of its
  own. After any other status, or a 2xx whose transaction does not commit, the
  claim is deleted so that a retry runs the operation. A record past its
  ``expires_at`` is ignored, and the next request with its key replaces it.
* Secrets are not replayed. In a 2xx response of a ``no_store`` operation, the
  top-level string fields ``key`` (API keys) and ``secret`` (webhook signing
  secrets) are stored as their type prefix followed by "…", such as
  ``sk_test_…`` and ``whsec_…``. The replay lists the masked fields in the
  ``Idempotent-Masked-Fields`` header.

Where the claim is written depends on the database. On PostgreSQL the
``in_progress`` record is committed in its own short transaction, so that a
concurrent request with the key finds it at once. On SQLite the request's
transaction holds the database's only write lock from its first statement
(``BEGIN IMMEDIATE``), so a second transaction opened by the same request would
wait for the request itself. There the record is written in the request's
transaction, and every other request waits for the lock until it commits, or
gets a 503 after ``fkod.db.sqlite_busy_timeout_ms``.
On both, the ``completed`` record is written in the request's transaction and
commits together with the operation's changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re

import sqlalchemy as sa
from pyramid.response import Response

from fkod.core.db import is_sqlite, run_in_transaction, utcnow
from fkod.core.errors import ApiError, Conflict, ValidationFailed, field_error
from fkod.core.idempotency_models import IdempotencyRecord

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MASKED_FIELDS_HEADER = "Idempotent-Masked-Fields"
# Headers of the first response that a replay repeats.
STORED_HEADERS = ("Content-Type", "Location", "Cache-Control")
# Top-level fields that hold a secret in the responses of no_store operations.
SECRET_FIELDS = ("key", "secret", "client_secret")
SECRET_PREFIXES = ("sk_live_", "sk_test_", "whsec_", "fkod_secret_")
MASK = "…"
MAX_KEY_LENGTH = 255

IN_PROGRESS = "in_progress"
COMPLETED = "completed"

_VALID_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
_CLAIM_ATTEMPTS = 3
_CLAIM = "fkod.idempotency.claim"
_REPLAY = "fkod.idempotency.replay"


class KeyReused(ApiError):
    status = 422
    code = "idempotency_key_reused"


class RequestInProgress(Conflict):
    code = "idempotency_request_in_progress"

    def __init__(self, message: str, **kwargs):
        super().__init__(message, **kwargs)
        self.headers["Retry-After"] = "1"


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """The caller that sent a key, and the request it was sent with."""

    owner: str
    key: str
    method: str
    path: str
    request_hash: str


@dataclasses.dataclass
class Claim:
    """A request's claim on a key while its operation runs."""

    fingerprint: Fingerprint
    record_id: int
    # created_at of the record. A request that takes over an abandoned record
    # sets a new one, so the first request's completion then matches no row.
    started_at: dt.datetime
    # True when the in_progress record was committed in its own transaction.
    durable: bool
    no_store: bool = False
    completed: bool = False
    committed: bool = False


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    headers: dict


def should_store(status: int) -> bool:
    """Return whether a response with ``status`` is replayed to retries."""
    if 200 <= status < 300:
        return True
    return 400 <= status < 500 and status not in (409, 429)


def request_hash(method: str, path: str, body: bytes) -> str:
    """Return the SHA-256 of the method, path and body, each prefixed with its length."""
    digest = hashlib.sha256()
    for part in (method.encode("ascii"), path.encode("utf-8"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def mask_secret(value: str) -> str:
    """Return the type prefix of a secret (``sk_test_``, ``whsec_``…) followed by "…"."""
    prefix = next((prefix for prefix in SECRET_PREFIXES if value.startswith(prefix)), "")
    return prefix + MASK


def mask_secrets(body: str) -> tuple[str, list[str]]:
    """Mask the secret fields of a JSON object body, and return it with the masked names."""
    try:
        data = json.loads(body)
    except ValueError:
        return body, []
    if not isinstance(data, dict):
        return body, []
    masked = [name for name in SECRET_FIELDS if isinstance(data.get(name), str)]
    if not masked:
        return body, []
    for name in masked:
        data[name] = mask_secret(data[name])
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")), masked


def _declares_no_secret(body: str) -> bool:
    """Tell whether a JSON object body has a secret field whose value is null."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and any(
        name in data and data[name] is None for name in SECRET_FIELDS)


def caller_owner(principal) -> str | None:
    """Return the owner of the caller's keys, or None for an anonymous request."""
    if principal is None:
        return None
    key_id = getattr(principal, "key_id", None)
    if key_id is not None:
        return f"key:{key_id}"
    oauth_client_id = getattr(principal, "oauth_client_id", None)
    if oauth_client_id is not None:
        # Each user of an application, and the application itself, owns its own keys.
        return f"oauth:{oauth_client_id}:{getattr(principal, 'user_id', None) or 'app'}"
    admin_id = getattr(principal, "admin_id", None)
    if admin_id is not None:
        return f"admin:{admin_id}"
    return f"partner:{principal.partner_id}"


def validate_key(value: str) -> str:
    """Return ``value`` if it is 1 to 255 printable ASCII characters, or raise a 400."""
    if _VALID_KEY.fullmatch(value) is None:
        description = (f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters "
                       "(space to tilde)")
        raise ValidationFailed(
            f"The {HEADER} header {description}; got {len(value)} characters.",
            code="invalid_idempotency_key",
            errors=[field_error("header", HEADER, description)],
        )
    return value


# Called by fkod.core.api around each operation --------------------------------


def buffer_body(request) -> None:
    """Read a POST body of unknown length into memory, so it can be hashed after the checks.

    A chunked body without Content-Length is a stream that the body check
    consumes. At most ``fkod.api.max_body_bytes`` + 1 bytes are read, so the
    body check still rejects a larger body with 413.
    """
    if request.method != "POST" or HEADER not in request.headers:
        return
    if request.content_length is not None or not request.is_body_readable:
        return
    max_bytes = request.registry.settings["fkod.api.max_body_bytes"]
    request.body = request.body_file.read(max_bytes + 1)


def claim(request, op) -> None:
    """Claim the request's Idempotency-Key, or find the stored response to replay.

    Runs after the request checks. Raises a 400 for an invalid key, a 422 when
    the key was used with another request and a 409 while that request runs.
    """
    if request.method != "POST" or HEADER not in request.headers:
        return
    owner = caller_owner(request.environ.get("fkod.principal"))
    if owner is None:
        return
    key = validate_key(request.headers[HEADER])
    path = request.path_qs
    fingerprint = Fingerprint(owner=owner, key=key, method=request.method, path=path[:500],
                              request_hash=request_hash(request.method, path, request.body))
    settings = request.registry.settings
    durable = not is_sqlite(request.dbsession)
    if durable:
        outcome = _claim_durably(request.registry["db.session_factory"], fingerprint, settings)
    else:
        outcome = _claim_in(request.dbsession, fingerprint, settings, durable=False)
    if outcome is None:
        raise RequestInProgress(
            f"Another request with this {HEADER} is being processed; retry shortly.")

    if isinstance(outcome, StoredResponse):
        log.info("idempotent replay", extra={"owner": owner, "status": outcome.status})
        request.environ[_REPLAY] = outcome
        return
    outcome.no_store = op.no_store
    request.environ[_CLAIM] = outcome
    request.tm.get().addAfterCommitHook(_record_commit, args=(outcome,))
    request.add_response_callback(_finish_claim)


def replayed_response(request) -> Response | None:
    """Return the stored response that ``claim`` found for this request, if any."""
    stored = request.environ.get(_REPLAY)
    if stored is None:
        return None
    response = Response(body=stored.body.encode("utf-8"), status=stored.status,
                        headerlist=list(stored.headers.items()))
    response.headers[REPLAYED_HEADER] = "true"
    if stored.status >= 400:
        # The request log and the usage record name the replayed error's code.
        request.environ["fkod.error_code"] = _error_code(stored.body)
    return response


def store_response(request, op, response) -> None:
    """Mark the claimed record completed with ``response``, in the request's transaction.

    Raises a 409 when a retry took the key over while the operation ran, which
    rolls the operation's changes back. A status that is not replayed is left
    for the response callback, which deletes the claim.
    """
    claimed = request.environ.get(_CLAIM)
    if claimed is None or not should_store(response.status_code):
        return
    stored = stored_form(response, claimed.no_store)
    if stored is None:
        return
    result = request.dbsession.execute(
        _complete_statement(claimed, stored, request.registry.settings))
    if result.rowcount != 1:
        timeout = request.registry.settings["fkod.idempotency.in_progress_timeout_seconds"]
        raise RequestInProgress(
            f"A retry with this {HEADER} took the request over after it ran for more than "
            f"{timeout} seconds; retry to get that request's response.")
    claimed.completed = True


# Claiming ---------------------------------------------------------------------


def _claim_durably(session_factory, fingerprint: Fingerprint, settings):
    """Claim the key in short transactions of its own, or return None if others keep winning."""
    # NOTE: a request whose session already uses a pooled connection takes a
    # second one here, so fkod.db.pool_size limits concurrent claims.
    for _attempt in range(_CLAIM_ATTEMPTS):
        try:
            outcome = run_in_transaction(session_factory, lambda session: _claim_in(
                session, fingerprint, settings, durable=True))
        except sa.exc.IntegrityError:
            # A concurrent request inserted the key first; read its record.
            continue
        if outcome is not None:
            return outcome
    return None


def _claim_in(session, fingerprint: Fingerprint, settings, *,
              durable: bool) -> Claim | StoredResponse | None:
    """Insert or take over the key's record in ``session``, or return what to replay.

    Returns None when a concurrent request changed the record first.
    """
    now = utcnow()
    record = session.execute(
        sa.select(IdempotencyRecord.__table__)
        .where(IdempotencyRecord.owner == fingerprint.owner,
               IdempotencyRecord.idempotency_key == fingerprint.key)
    ).one_or_none()
    if record is None:
        record_id = session.scalar(
            sa.insert(IdempotencyRecord)
            .values(**_in_progress_values(fingerprint, now, settings))
            .returning(IdempotencyRecord.id)
        )
        return Claim(fingerprint, record_id, now, durable=durable)

    if record.expires_at > now:
        _check_same_request(record, fingerprint)
        if record.status == COMPLETED:
            return StoredResponse(record.response_status, record.response_body,
                                  dict(record.response_headers or {}))
        timeout = dt.timedelta(seconds=settings["fkod.idempotency.in_progress_timeout_seconds"])
        if record.created_at > now - timeout:
            raise RequestInProgress(
                f"A request with this {HEADER} is still being processed; retry shortly.")
        log.warning("taking over an abandoned idempotent request",
                    extra={"idempotency_record_id": record.id, "owner": fingerprint.owner,
                           "started_at": record.created_at.isoformat()})

    takeover = session.execute(
        sa.update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record.id,
               IdempotencyRecord.status == record.status,
               IdempotencyRecord.created_at == record.created_at)
        .values(**_in_progress_values(fingerprint, now, settings))
        .execution_options(synchronize_session=False)
    )
    if takeover.rowcount != 1:
        return None
    return Claim(fingerprint, record.id, now, durable=durable)


def _in_progress_values(fingerprint: Fingerprint, now: dt.datetime, settings) -> dict:
    return {
        "owner": fingerprint.owner,
        "idempotency_key": fingerprint.key,
        "method": fingerprint.method,
        "path": fingerprint.path,
        "request_hash": fingerprint.request_hash,
        "status": IN_PROGRESS,
        "response_status": None,
        "response_body": None,
        "response_headers": None,
        "created_at": now,
        "completed_at": None,
        "expires_at": now + dt.timedelta(hours=settings["fkod.idempotency.ttl_hours"]),
    }


def _check_same_request(record, fingerprint: Fingerprint) -> None:
    if record.method != fingerprint.method or record.path != fingerprint.path:
        difference = f"{record.method} {record.path}"
    elif record.request_hash != fingerprint.request_hash:
        difference = "a different body"
    else:
        return
    raise KeyReused(
        f"This {HEADER} was already used with {difference}; send a new key for a new request.",
        errors=[field_error("header", HEADER, "already used with a different request")],
    )


# Completing -------------------------------------------------------------------


def stored_form(response, no_store: bool) -> StoredResponse | None:
    """Return what is stored of ``response``, or None when it cannot be stored safely."""
    try:
        body = response.body.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("response not stored for idempotent replay: body is not UTF-8",
                    extra={"status": response.status_code})
        return None
    headers = {name: response.headers[name] for name in STORED_HEADERS
               if name in response.headers}
    if no_store and 200 <= response.status_code < 300:
        body, masked = mask_secrets(body)
        if not masked and _declares_no_secret(body):
            # A secret field that is null (a public OAuth client) reveals nothing.
            return StoredResponse(response.status_code, body, headers)
        if not masked:
            # NOTE: a no_store operation whose secret sits in a field missing from
            # SECRET_FIELDS loses idempotency: the claim is deleted and a retry runs again.
            log.warning("response not stored for idempotent replay: no_store response "
                        "without a known secret field", extra={"status": response.status_code})
            return None
        headers[MASKED_FIELDS_HEADER] = ", ".join(masked)
    return StoredResponse(response.status_code, body, headers)


def _completed_values(stored: StoredResponse, settings) -> dict:
    now = utcnow()
    return {
        "status": COMPLETED,
        "response_status": stored.status,
        "response_body": stored.body,
        "response_headers": stored.headers,
        "completed_at": now,
        "expires_at": now + dt.timedelta(hours=settings["fkod.idempotency.ttl_hours"]),
    }


def _complete_statement(claimed: Claim, stored: StoredResponse, settings):
    return (
        sa.update(IdempotencyRecord)
        .where(*_is_claimed_by(claimed))
        .values(**_completed_values(stored, settings))
        .execution_options(synchronize_session=False)
    )


def _is_claimed_by(claimed: Claim) -> tuple:
    return (IdempotencyRecord.id == claimed.record_id,
            IdempotencyRecord.status == IN_PROGRESS,
            IdempotencyRecord.created_at == claimed.started_at)


def _record_commit(succeeded: bool, claimed: Claim) -> None:
    claimed.committed = succeeded


def _finish_claim(request, response) -> None:
    """Store a rolled-back 4xx or delete the claim, after the request's transaction ended."""
    claimed = request.environ[_CLAIM]
    if claimed.completed and claimed.committed:
        return
    status = response.status_code
    session_factory = request.registry["db.session_factory"]
    settings = request.registry.settings
    stored = None
    if not claimed.committed and 400 <= status < 500 and should_store(status):
        # An ApiError raised by the operation rolls its transaction back, so the
        # error is stored now.
        stored = stored_form(response, claimed.no_store)
    try:
        if stored is not None:
            run_in_transaction(session_factory, lambda session: _store_rolled_back(
                session, claimed, stored, settings))
        else:
            run_in_transaction(session_factory, lambda session: _release(session, claimed))
    except sa.exc.SQLAlchemyError:
        # A committed claim stays in_progress, and retries with its key get 409
        # until fkod.idempotency.in_progress_timeout_seconds have passed.
        log.exception("idempotency record not finished",
                      extra={"idempotency_record_id": claimed.record_id, "status": status})


def _store_rolled_back(session, claimed: Claim, stored: StoredResponse, settings) -> None:
    if claimed.durable:
        # No row changes when a retry took the key over; its outcome is kept.
        session.execute(_complete_statement(claimed, stored, settings))
        return
    # On SQLite the claim was rolled back with the request's transaction.
    fingerprint = claimed.fingerprint
    existing = session.execute(
        sa.select(IdempotencyRecord.id, IdempotencyRecord.expires_at)
        .where(IdempotencyRecord.owner == fingerprint.owner,
               IdempotencyRecord.idempotency_key == fingerprint.key)
    ).one_or_none()
    if existing is not None and existing.expires_at > utcnow():
        return
    values = {**_in_progress_values(fingerprint, claimed.started_at, settings),
              **_completed_values(stored, settings)}
    if existing is None:
        session.execute(sa.insert(IdempotencyRecord).values(**values))
    else:
        session.execute(sa.update(IdempotencyRecord).where(IdempotencyRecord.id == existing.id)
                        .values(**values).execution_options(synchronize_session=False))


def _release(session, claimed: Claim) -> None:
    session.execute(sa.delete(IdempotencyRecord).where(*_is_claimed_by(claimed))
                    .execution_options(synchronize_session=False))


def _error_code(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("code") if isinstance(data, dict) else None
