"""Declared settings: every ``fkod.*`` setting, its type, default and meaning.

Settings come from the ``[app:main]`` section of an .ini file and can be
overridden from the environment by the setting name upper-cased with dots
turned into underscores (``fkod.webhooks.allow_loopback`` is read from
``FKOD_WEBHOOKS_ALLOW_LOOPBACK``). A setting whose value in the file has the
form ``env:NAME`` is read from the environment variable ``NAME``, which is how
production.ini names its secrets without containing them.

The app factory, ``fkod worker`` and ``fkod scheduler`` all call
:func:`load_settings`, so each process sees the same values.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

PREFIX = "fkod."

# The sdk folder at the repository root, beside the fkod package.
_DEFAULT_SDK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "sdk")


class ConfigurationError(Exception):
    """A setting is missing or invalid; the message names it and says what is expected."""


def _as_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"true", "yes", "on", "1"}:
        return True
    if value in {"false", "no", "off", "0"}:
        return False
    raise ValueError("expected true or false")


def _as_int(raw: str) -> int:
    return int(raw.strip())


def _as_float(raw: str) -> float:
    return float(raw.strip())


def _as_str(raw: str) -> str:
    return raw.strip()


def _as_cents(raw: str) -> Decimal:
    """Parse a decimal of 0 or more with at most two places, such as 100.00 or 30."""
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0 or value != round(value, 2):
        raise ValueError("expected a number of 0 or more with at most two decimals, such "
                         "as 100.00")
    return value


def _as_list(raw: str) -> list[str]:
    return [item for item in raw.replace(",", " ").split() if item]


_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _as_plugin_names(raw: str) -> list[str]:
    names = _as_list(raw)
    for name in names:
        if not _PLUGIN_NAME.match(name):
            raise ValueError(f"{name!r} is not a plugin entry-point name (letters, digits, "
                             f"'_', '.' and '-', at most 100 characters)")
    return names


@dataclasses.dataclass(frozen=True)
class Setting:
    """One declared setting."""

    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False


def _setting(name, parse, default, help, **kwargs) -> Setting:
    return Setting(PREFIX + name, parse, default, help, **kwargs)


SETTINGS: tuple[Setting, ...] = (
    _setting("environment", _as_str, "development",
             "Which kind of deployment this is; production forbids development shortcuts.",
             choices=("development", "test", "production")),
    _setting("db.url", _as_str, None,
             "SQLAlchemy database URL: sqlite:///%(here)s/fkod.sqlite or postgresql+psycopg://..."),
    _setting("db.pool_size", _as_int, "10", "Connections kept open per process (PostgreSQL).",
             minimum=1),
    _setting("db.sqlite_busy_timeout_ms", _as_int, "5000",
             "How long SQLite waits for a lock before failing, in milliseconds.", minimum=0),
    _setting("redis.url", _as_str, "",
             "Redis URL used by the redis rate limiter, usage stream and broker."),
    _setting("redis.key_prefix", _as_str, "fkod:",
             "Prefix of every Redis key the platform writes, so several deployments can "
             "share one Redis."),
    _setting("secrets.api_key_pepper", _as_str, None,
             "Server-side pepper for the HMAC-SHA256 of API keys (32 characters or more).",
             secret=True),
    _setting("secrets.webhook_encryption_key", _as_str, None,
             "Fernet key (urlsafe base64 of 32 bytes) that encrypts webhook secrets at rest.",
             secret=True),
    _setting("secrets.jwt_private_key_file", _as_str, "",
             "PEM file of the EC P-256 key that signs access tokens; empty means "
             "jwt_private_key holds the PEM itself."),
    _setting("secrets.jwt_private_key", _as_str, "",
             "PEM of the EC P-256 key that signs access tokens.", secret=True),
    _setting("secrets.jwt_previous_public_keys", _as_str, "",
             "PEM public keys, one after the other, of signing keys replaced by a rotation; "
             "tokens they signed still verify and jwks.json lists them. Remove one once its "
             "tokens have expired."),
    _setting("secrets.jwt_previous_public_keys_file", _as_str, "",
             "A PEM file of previous public signing keys, read as jwt_previous_public_keys."),
    _setting("auth.jwt_issuer", _as_str, "",
             "The iss claim of signed tokens, also the issuer that the OAuth metadata "
             "document names; empty means the OAuth issuer URL (fkod.auth.oauth_issuer_url, "
             "or fkod.auth.account_link_base_url)."),
    _setting("auth.oauth_issuer_url", _as_str, "",
             "Scheme, host and port that the OAuth metadata document's issuer and endpoint "
             "URLs start with, such as https://partners.fkod.example; empty means "
             "fkod.auth.account_link_base_url. The request's Host header is never used."),
    _setting("auth.argon2_time_cost", _as_int, "3",
             "argon2id passes over memory per password hash.", minimum=1),
    _setting("auth.argon2_memory_kib", _as_int, "65536",
             "argon2id memory per password hash, in KiB (at least 8 per lane, 4 lanes).",
             minimum=32),
    _setting("auth.access_token_ttl_seconds", _as_int, "3600",
             "Lifetime of a login access token, in seconds.", minimum=60),
    _setting("auth.password_reset_ttl_seconds", _as_int, "3600",
             "How long a mailed password-reset token can be used, in seconds.",
             minimum=300, maximum=86400),
    _setting("auth.email_verification_ttl_seconds", _as_int, "172800",
             "How long a mailed email-verification token can be used, in seconds.",
             minimum=3600, maximum=1209600),
    _setting("auth.account_link_base_url", _as_str, "http://localhost:6543",
             "Scheme, host and port that the links in account mail (password reset, email "
             "verification) start with, such as https://partners.fkod.example."),
    _setting("auth.account_mails_per_hour", _as_int, "5",
             "Most password-reset and verification mails sent to one account per hour; "
             "further requests are accepted but send nothing.", minimum=1),
    _setting("auth.login_failures_per_account", _as_int, "10",
             "Failed logins one account accepts per login_failure_window_seconds, from all "
             "addresses together, before further logins get 429.", minimum=1),
    _setting("auth.login_failure_window_seconds", _as_int, "900",
             "The window that login_failures_per_account counts in, in seconds.", minimum=60),
    _setting("auth.totp_issuer", _as_str, "F-KOD",
             "The issuer name that authenticator apps show beside a TOTP entry."),
    _setting("logging.format", _as_str, "",
             "How log records are written: json (one JSON object per line) or text (readable "
             "lines); empty means json when fkod.environment is production, text otherwise.",
             choices=("", "json", "text")),
    _setting("metrics.allowed_networks", _as_list, "127.0.0.0/8 ::1/128",
             "CIDR ranges of the client addresses (after fkod.proxy.trusted_proxies) that may "
             "read GET /metrics; empty means none, so only fkod.metrics.token opens it."),
    _setting("metrics.token", _as_str, "",
             "A bearer token that opens GET /metrics from any address; empty means none.",
             secret=True),
    _setting("alerts.quota_thresholds", _as_list, "80 100",
             "Percentages of a rate-limit window at which a key's partner is alerted once per "
             "window (key.quota_warning below 100, key.quota_exhausted at 100)."),
    _setting("alerts.expiry_days", _as_list, "7 1",
             "Days before an API key's expires_at at which its partner is alerted "
             "(key.expiring)."),
    _setting("alerts.anomaly_min_requests", _as_int, "100",
             "Requests a partner needs in the last hour, or on average in the same hour of the "
             "previous 7 days, before its traffic or error rate can raise usage.anomaly.",
             minimum=1),
    _setting("alerts.anomaly_traffic_factor", _as_float, "3.0",
             "How many times above or below its usual hourly volume a partner's last hour must "
             "be to raise usage.anomaly.", minimum=1.0),
    _setting("alerts.anomaly_error_rate_points", _as_float, "20.0",
             "By how many percentage points the last hour's error rate (5xx and 4xx other than "
             "429) must exceed the usual one to raise usage.anomaly.", minimum=0.0),
    _setting("proxy.trusted_proxies", _as_list, "",
             "CIDR ranges of the reverse proxies in front of the app, separated by spaces or "
             "commas. X-Forwarded-For is read only when the connection comes from one of "
             "them; empty means the connection's address is the client's."),
    _setting("ratelimit.per_address_per_minute", _as_int, "120",
             "Requests one client address may send per minute to the operations that need no "
             "credential (sign-up, login, password reset, public reads); 0 means no limit.",
             minimum=0),
    _setting("ratelimit.per_address_per_hour", _as_int, "3000",
             "Requests one client address may send per hour to the operations that need no "
             "credential; 0 means no limit.", minimum=0),
    _setting("api.max_body_bytes", _as_int, "1048576",
             "Largest JSON request body accepted, in bytes; larger bodies get 413.", minimum=1024),
    _setting("gateway.key_cache_seconds", _as_float, "1",
             "How long a process trusts a verified API key before reading it again, in "
             "seconds; a change made elsewhere reaches this process within that time.",
             minimum=0, maximum=1),
    _setting("ratelimit.backend", _as_str, "memory", "Where rate-limit counters live.",
             choices=("memory", "redis")),
    _setting("ratelimit.sub_buckets", _as_int, "60",
             "Sub-buckets per sliding window; the window edge is exact to one sub-bucket.",
             minimum=1, maximum=1000),
    _setting("ratelimit.fail_open", _as_bool, "true",
             "When the rate-limit store is unreachable, admit requests (true) or answer 503 (false)."),
    _setting("ratelimit.endpoint_limits", _as_str, "",
             "Extra windows per route, shared by a partner's keys in one mode, separated by "
             "semicolons: 'POST /api/v1/users = 100/60' allows 100 requests per 60 seconds."),
    _setting("ratelimit.lease_size", _as_int, "1",
             "Maximum permits a process takes from Redis in one call and spends locally; "
             "1 disables leasing. Ignored by the memory backend.", minimum=1, maximum=1000),
    _setting("metering.backend", _as_str, "memory", "Where usage records are buffered.",
             choices=("memory", "redis")),
    _setting("metering.flush_interval_ms", _as_int, "2000",
             "How often a process flushes its buffered usage records, in milliseconds.",
             minimum=10),
    _setting("metering.rollup_interval_seconds", _as_int, "300",
             "How often the worker rolls raw usage up into hourly rows, in seconds.",
             minimum=1),
    _setting("metering.rollup_delay_seconds", _as_int, "300",
             "How long after an hour ends its usage is first rolled up, in seconds; "
             "must exceed the time records take to reach the database.", minimum=0),
    _setting("metering.rollup_reroll_hours", _as_int, "3",
             "How many of the last rolled-up hours each roll-up run rolls up again, "
             "to count records that arrived late.", minimum=0, maximum=168),
    _setting("metering.raw_retention_days", _as_int, "30",
             "How long raw usage rows are kept once their hour is rolled up, in days.",
             minimum=1),
    _setting("metering.hourly_retention_days", _as_int, "400",
             "How long hourly usage roll-ups are kept, in days; at least "
             "raw_retention_days.", minimum=1),
    _setting("metering.purge_interval_seconds", _as_int, "3600",
             "How often the worker deletes usage rows past their retention and expired "
             "idempotency records, in seconds.", minimum=1),
    _setting("tasks.broker", _as_str, "inprocess",
             "Dramatiq broker: inprocess runs actors on threads of this process; "
             "redis needs fkod worker processes.", choices=("inprocess", "redis")),
    _setting("tasks.inprocess_worker_threads", _as_int, "2",
             "Worker threads of the in-process broker.", minimum=1),
    _setting("tasks.poll_interval_ms", _as_int, "100",
             "How long an idle worker thread waits for a message before it checks for "
             "shutdown, in milliseconds; stopping a worker takes up to twice this.",
             minimum=1, maximum=1000),
    _setting("webhooks.allow_loopback", _as_bool, "false",
             "Allow webhook receivers on loopback addresses (http included)."),
    _setting("webhooks.require_https", _as_bool, "true",
             "Refuse plain http webhook URLs (loopback receivers are exempt when allowed)."),
    _setting("webhooks.timeout_seconds", _as_float, "10",
             "How long one delivery attempt waits for the receiver, in seconds.", minimum=0.1),
    _setting("webhooks.connect_timeout_seconds", _as_float, "5",
             "How long one delivery attempt waits for the TCP and TLS connection, in "
             "seconds; timeout_seconds bounds the whole attempt.", minimum=0.1),
    _setting("webhooks.max_response_bytes", _as_int, "4096",
             "How much of a receiver's response body is read and stored, in bytes.",
             minimum=0, maximum=1048576),
    _setting("webhooks.max_concurrency_per_endpoint", _as_int, "4",
             "How many deliveries to one endpoint may be in flight at once, so a slow "
             "receiver cannot take every worker thread; exact in each worker process, and "
             "across processes except for claims made at the same instant.", minimum=1),
    _setting("webhooks.secret_overlap_seconds", _as_int, "86400",
             "After a secret rotation, how long deliveries also carry a signature made "
             "with the old secret, in seconds.", minimum=0, maximum=604800),
    _setting("webhooks.disable_after_failing_seconds", _as_int, "432000",
             "An endpoint whose every attempt has failed for this many seconds is "
             "disabled.", minimum=60),
    _setting("webhooks.signature_tolerance_seconds", _as_int, "300",
             "How far a signature timestamp may be from the current time, either way, for "
             "the verify endpoint, in seconds.", minimum=1, maximum=86400),
    _setting("webhooks.test_sends_per_minute", _as_int, "10",
             "How many test events one partner may send in a minute; each holds a request "
             "thread until the receiver answers.", minimum=1),
    _setting("webhooks.max_backoff_seconds", _as_int, "86400",
             "Upper bound of the delay between two delivery attempts, in seconds.", minimum=1),
    _setting("webhooks.sweep_interval_seconds", _as_int, "15",
             "How often the sweeper re-enqueues deliveries that are due, in seconds.",
             minimum=1),
    _setting("webhooks.in_flight_timeout_seconds", _as_int, "120",
             "After this many seconds a claimed delivery is considered lost and is retried.",
             minimum=10),
    _setting("marketplace.event_hook_timeout_seconds", _as_int, "120",
             "How long one call of a plugin's fkod_integration_event hook may run before it "
             "is stopped and retried, in seconds.", minimum=10, maximum=3600),
    _setting("mail.backend", _as_str, "log",
             "Where outgoing mail goes: log writes it to the log, smtp sends it, memory keeps "
             "it in the process (tests).", choices=("log", "smtp", "memory")),
    _setting("mail.from_address", _as_str, "F-KOD Partners <partners@fkod.example>",
             "The From address of outgoing mail."),
    _setting("mail.smtp_host", _as_str, "", "SMTP server host name, for mail.backend = smtp."),
    _setting("mail.smtp_port", _as_int, "587", "SMTP server port.", minimum=1, maximum=65535),
    _setting("mail.smtp_username", _as_str, "", "SMTP user name; empty means no login."),
    _setting("mail.smtp_password", _as_str, "", "SMTP password.", secret=True),
    _setting("mail.smtp_starttls", _as_bool, "true", "Upgrade the SMTP connection with STARTTLS."),
    _setting("mail.smtp_timeout_seconds", _as_float, "10",
             "How long one SMTP exchange may take, in seconds.", minimum=0.1),
    _setting("support.notification_address", _as_str, "support@fkod.example",
             "Where mail about new support tickets and partner replies goes while a ticket "
             "has no assigned admin."),
    _setting("idempotency.ttl_hours", _as_int, "24",
             "How long the response to a POST sent with an Idempotency-Key is replayed, "
             "in hours.", minimum=1),
    _setting("idempotency.in_progress_timeout_seconds", _as_int, "60",
             "After this many seconds an unfinished request with an Idempotency-Key is "
             "considered abandoned, and a retry with the key runs the operation again.",
             minimum=1),
    _setting("partners.invitation_ttl_seconds", _as_int, "604800",
             "How long a mailed invitation to join a partner's team can be accepted, in "
             "seconds.", minimum=3600, maximum=2592000),
    _setting("verification.max_document_bytes", _as_int, "10485760",
             "Largest verification document a partner may upload, in bytes; larger files get "
             "413.", minimum=1024, maximum=104857600),
    _setting("storage.backend", _as_str, "local",
             "Where verification documents are kept: local files in storage.local_directory, "
             "or an S3-compatible object store.", choices=("local", "s3")),
    _setting("storage.local_directory", _as_str, "var/documents",
             "Directory of the local document store, created on first use; a relative path is "
             "resolved against the working directory at start-up. It must be outside the fkod "
             "package, so no static route can ever serve it."),
    _setting("storage.s3_endpoint_url", _as_str, "",
             "URL of the S3-compatible server, such as http://127.0.0.1:9000; empty means "
             "Amazon S3's endpoint for s3_region."),
    _setting("storage.s3_bucket", _as_str, "",
             "Bucket of the s3 document store; required when storage.backend = s3."),
    _setting("storage.s3_region", _as_str, "us-east-1", "Region of the s3 document store."),
    _setting("storage.s3_key_prefix", _as_str, "verification-documents/",
             "Prefix of every object key the s3 document store writes."),
    _setting("storage.s3_addressing_style", _as_str, "auto",
             "How the bucket is named in request URLs: path (most S3-compatible servers), "
             "virtual (a host name per bucket) or auto (boto3 decides).",
             choices=("auto", "path", "virtual")),
    _setting("storage.s3_access_key_id", _as_str, "",
             "Access key id of the s3 document store; empty means boto3's own credential "
             "chain (AWS_* environment variables, shared files, instance role).", secret=True),
    _setting("storage.s3_secret_access_key", _as_str, "",
             "Secret access key that goes with storage.s3_access_key_id.", secret=True),
    _setting("storage.s3_timeout_seconds", _as_float, "10",
             "How long one request to the s3 document store may wait to connect, and then "
             "for each read, in seconds.", minimum=0.1),
    _setting("billing.default_provider", _as_str, "ledger",
             "The payment provider that plan invoices and customer charges go through when "
             "a partner has not chosen one; ledger records bank transfers that an admin "
             "marks as received."),
    _setting("billing.commission_rate_percent", _as_cents, "30",
             "F-KOD's commission on partner revenue, in percent, unless an admin set another "
             "rate for the partner.", minimum=0, maximum=100),
    _setting("billing.payout_minimum", _as_cents, "100.00",
             "The smallest balance, in USD, that is paid out; smaller balances roll over to "
             "the next month."),
    _setting("billing.invoice_days_until_due", _as_int, "14",
             "Days a partner has to pay an invoice sent by bank transfer.", minimum=1,
             maximum=90),
    _setting("billing.stuck_after_seconds", _as_int, "900",
             "A charge or payout whose provider call has not finished after this many "
             "seconds is retried with the same idempotency key.", minimum=60),
    _setting("scheduler.embedded", _as_bool, "false",
             "Run the job scheduler inside the application process, for the embedded "
             "default with its in-process worker; production runs fkod scheduler instead."),
    _setting("developers.sdk_dir", _as_str, _DEFAULT_SDK_DIR,
             "Folder that holds one sub-folder per SDK (python, javascript, go, java), "
             "listed and packaged by /api/developers/sdks."),
    _setting("developers.status_cache_seconds", _as_float, "5",
             "How long a process reuses the result of /api/developers/status, in seconds; "
             "0 checks the components on every request.", minimum=0, maximum=60),
    _setting("developers.sandbox_resets_per_hour", _as_int, "10",
             "How many times a partner may reset its test-mode sandbox per hour.", minimum=1),
    _setting("tasks.worker_heartbeat_seconds", _as_int, "5",
             "How often each fkod worker process writes its heartbeat key to Redis, in "
             "seconds; the key expires after three intervals.", minimum=1, maximum=60),
    _setting("plugins.disabled", _as_list, "",
             "Names of plugins not to load, separated by spaces or commas."),
    _setting("plugins.state_cache_seconds", _as_float, "1",
             "How long a process trusts its cached plugin enabled/disabled state, in seconds.",
             minimum=0, maximum=5),
    _setting("plugins.pinned_on", _as_plugin_names, "",
             "Names of plugins that are always enabled, separated by spaces or commas; "
             "admins cannot disable them at run time."),
    _setting("plugins.pinned_off", _as_plugin_names, "",
             "Names of plugins that are never loaded, separated by spaces or commas; admins "
             "cannot enable them at run time. fkod.plugins.disabled is an older name for "
             "this list, and the names of both are pinned off."),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def env_name(setting_name: str) -> str:
    """Return the environment variable that overrides a setting."""
    return setting_name.upper().replace(".", "_")


def plugin_setting(raw: Mapping[str, Any], name: str,
                   environ: Mapping[str, str] | None = None) -> str:
    """Read a plugin's own setting (``fkod_stripe.api_key``) the way core settings are read.

    The environment variable named after the setting wins, then the .ini
    value, which may name a variable as ``env:NAME``. A missing value is "".
    """
    environ = os.environ if environ is None else environ
    override = env_name(name)
    if environ.get(override):
        return environ[override]
    value = str(raw.get(name) or "").strip()
    if value.startswith("env:"):
        return environ.get(value[len("env:"):], "")
    return value


def load_settings(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict:
    """Parse and check every ``fkod.*`` setting; return a new settings dict.

    Keys that are not ``fkod.*`` pass through unchanged. Raises
    :class:`ConfigurationError` for the first problem found, naming the setting,
    where its value came from and what it expects.
    """
    environ = os.environ if environ is None else environ
    result = dict(raw)
    unknown = sorted(
        key for key in raw if key.startswith(PREFIX) and key not in SETTINGS_BY_NAME
    )
    if unknown:
        raise ConfigurationError(
            f"unknown setting {unknown[0]}: check its spelling against fkod/core/settings.py"
        )

    for setting in SETTINGS:
        value, source = _raw_value(setting, raw, environ)
        if value is None:
            raise ConfigurationError(
                f"missing setting {setting.name} ({setting.help}) "
                f"set it in the .ini file or in the environment variable {env_name(setting.name)}"
            )
        result[setting.name] = _parse(setting, value, source)
    return result


def _raw_value(setting: Setting, raw: Mapping[str, Any], environ: Mapping[str, str]):
    override = env_name(setting.name)
    if override in environ:
        return environ[override], f"environment variable {override}"

    value = raw.get(setting.name)
    if value is None:
        return setting.default, "default"
    if not isinstance(value, str):
        return str(value), "settings"
    if value.strip().startswith("env:"):
        variable = value.strip()[len("env:"):]
        if variable not in environ or not environ[variable]:
            raise ConfigurationError(
                f"missing setting {setting.name}: the environment variable {variable} "
                f"that the .ini file names is not set ({setting.help})"
            )
        return environ[variable], f"environment variable {variable}"
    return value, "the .ini file"


def _parse(setting: Setting, value: str, source: str) -> Any:
    shown = "(hidden)" if setting.secret else repr(value)
    try:
        parsed = setting.parse(value)
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid setting {setting.name} = {shown} from {source}: {exc}; {setting.help}"
        ) from None
    if setting.choices and parsed not in setting.choices:
        raise ConfigurationError(
            f"invalid setting {setting.name} = {shown} from {source}: "
            f"expected one of {', '.join(setting.choices)}"
        )
    if setting.minimum is not None and parsed < setting.minimum:
        raise ConfigurationError(
            f"invalid setting {setting.name} = {shown} from {source}: "
            f"expected at least {setting.minimum:g}"
        )
    if setting.maximum is not None and parsed > setting.maximum:
        raise ConfigurationError(
            f"invalid setting {setting.name} = {shown} from {source}: "
            f"expected at most {setting.maximum:g}"
        )
    return parsed
