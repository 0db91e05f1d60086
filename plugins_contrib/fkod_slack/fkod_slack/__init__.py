"""F-KOD plugin: post the learning events a customer chooses to a Slack channel.

The customer installs the integration with a Slack incoming-webhook URL and
the event types to post. Settings, read from the platform's .ini when the app
is built:

``fkod_slack.allowed_url_prefixes``
    Whitespace-separated URL prefixes a webhook URL must start with; the
    default admits only ``https://hooks.slack.com/services/``. Tests add the
    address of a loopback receiver, which the platform accepts only where
    ``fkod.webhooks.allow_loopback`` is true.
``fkod_slack.timeout_seconds``
    The time one post to Slack may take, in seconds (default 10).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
from urllib.parse import urlsplit

from fkod.core.hookspecs import hookimpl
from fkod.core.integrations import IntegrationError, IntegrationManifest
from fkod.core.settings import ConfigurationError
from fkod.core.webhooks.http import post_webhook
from fkod.core.webhooks.urls import UnsafeUrl, validate_webhook_url
from fkod_slack.messages import EVENT_TYPES, build_message

log = logging.getLogger(__name__)

SLUG = "slack-notifications"
PUBLISHER = "fkod-labs"
USER_AGENT = "F-KOD-Slack/1.0"
DEFAULT_URL_PREFIXES = ("https://hooks.slack.com/services/",)
DEFAULT_TIMEOUT_SECONDS = 10.0
# Slack responds to an incoming-webhook post with "ok" or a short error code.
MAX_RESPONSE_BYTES = 1024
# How many (install, event) pairs each process remembers having posted.
POSTED_MEMORY = 10_000

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["webhook_url"],
    "additionalProperties": False,
    "properties": {
        "webhook_url": {
            "type": "string",
            "format": "uri",
            "writeOnly": True,
            "maxLength": 2048,
            "title": "Slack incoming-webhook URL",
            "description": "From Slack: Apps > Incoming Webhooks > Add New Webhook to "
                           "Workspace. It starts with https://hooks.slack.com/services/.",
        },
        "events": {
            "type": "array",
            "title": "Events to post",
            "description": "The events that post a message; all of them when left out.",
            "items": {"enum": list(EVENT_TYPES)},
            "minItems": 1,
            "uniqueItems": True,
            "default": list(EVENT_TYPES),
        },
    },
}


@dataclasses.dataclass(frozen=True)
class SlackSettings:
    """The plugin's settings; the defaults apply until an application is built."""

    allowed_url_prefixes: tuple[str, ...] = DEFAULT_URL_PREFIXES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    allow_loopback: bool = False


class SlackDeliveryFailed(Exception):
    """A post to Slack failed; the platform retries the event with backoff."""


# NOTE: the integration hooks receive no registry, so the settings of the last
# application built in the process apply to every call.
_settings = SlackSettings()
_posted: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
_posted_lock = threading.Lock()


def parse_settings(settings: dict) -> SlackSettings:
    """Read the plugin's settings; raise ConfigurationError for an invalid value."""
    raw_prefixes = settings.get("fkod_slack.allowed_url_prefixes")
    prefixes = tuple(raw_prefixes.split()) if raw_prefixes else DEFAULT_URL_PREFIXES
    for prefix in prefixes:
        parts = urlsplit(prefix)
        is_http = parts.scheme in ("http", "https") and bool(parts.netloc)
        if not is_http or not parts.path.endswith("/"):
            raise ConfigurationError(
                f"invalid setting fkod_slack.allowed_url_prefixes: {prefix!r} is not an "
                "http or https URL with a path that ends in /")

    raw_timeout = settings.get("fkod_slack.timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout <= 60:
        raise ConfigurationError(f"invalid setting fkod_slack.timeout_seconds = {raw_timeout!r}: "
                                 "expected a number of seconds between 0 and 60")

    return SlackSettings(allowed_url_prefixes=prefixes, timeout_seconds=timeout,
                         allow_loopback=bool(settings.get("fkod.webhooks.allow_loopback", False)))


def check_webhook_url(url: object, settings: SlackSettings) -> str:
    """Return the normalized webhook URL, or raise IntegrationError saying what is wrong."""
    if not isinstance(url, str) or not url:
        raise IntegrationError("The Slack webhook URL is missing.")
    try:
        normalized = validate_webhook_url(url, allow_loopback=settings.allow_loopback,
                                          require_https=True, resolve=False)
    except UnsafeUrl as exc:
        raise IntegrationError(f"The Slack webhook URL is not accepted: {exc.message}") from None
    if not normalized.startswith(settings.allowed_url_prefixes):
        raise IntegrationError(
            "The Slack webhook URL must start with "
            + " or ".join(settings.allowed_url_prefixes)
            + "; copy it from Slack's Incoming Webhooks page.")
    return normalized


def chosen_events(config: dict) -> tuple[str, ...]:
    return tuple(config.get("events") or EVENT_TYPES)


def post_message(url: str, message: dict, settings: SlackSettings) -> None:
    """POST ``message`` to a Slack webhook URL; raise SlackDeliveryFailed unless it is accepted."""
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    result = post_webhook(url, body, {"Content-Type": "application/json",
                                      "User-Agent": USER_AGENT},
                          timeout_seconds=settings.timeout_seconds,
                          allow_loopback=settings.allow_loopback,
                          max_response_bytes=MAX_RESPONSE_BYTES)
    # The URL is a secret of the customer, so neither the error nor the log names it.
    if result.error is not None and result.status_code is None:
        raise SlackDeliveryFailed(f"posting to Slack failed: {result.error}")
    if not 200 <= (result.status_code or 0) < 300:
        raise SlackDeliveryFailed(
            f"Slack responded with status {result.status_code}: {result.body[:200]!r}")


def _remember(key: tuple[str, str]) -> None:
    with _posted_lock:
        _posted[key] = None
        while len(_posted) > POSTED_MEMORY:
            _posted.popitem(last=False)


def _already_posted(key: tuple[str, str]) -> bool:
    with _posted_lock:
        return key in _posted


def configure(settings: dict) -> None:
    """Apply the application's settings to the plugin and forget the posted events.

    ``fkod_include`` calls it once for each application built.
    """
    global _settings
    _settings = parse_settings(settings)
    with _posted_lock:
        _posted.clear()


@hookimpl
def fkod_include(config):
    configure(config.get_settings())


@hookimpl
def fkod_register_integrations():
    return [IntegrationManifest(
        slug=SLUG,
        name="Slack notifications",
        publisher=PUBLISHER,
        category="communication",
        description="Posts course completions, new and updated users and mentor matches "
                    "to a Slack channel of your choice.",
        version="1.0.0",
        event_types=EVENT_TYPES,
        config_schema=CONFIG_SCHEMA,
        documentation_url="https://api.slack.com/messaging/webhooks",
    )]


@hookimpl
def fkod_integration_installed(install):
    check_webhook_url(install.config.get("webhook_url"), _settings)
    unknown = sorted(set(chosen_events(install.config)) - set(EVENT_TYPES))
    if unknown:
        raise IntegrationError(f"Slack cannot post the event types {', '.join(unknown)}; "
                               f"choose from {', '.join(EVENT_TYPES)}.")
    log.info("slack integration installed", extra={"install_id": install.install_id})


@hookimpl
def fkod_integration_event(install, event):
    if install.integration_slug != SLUG or event["type"] not in chosen_events(install.config):
        return

    # Delivery is at least once; a redelivered event this process already
    # posted is skipped, because Slack keeps no record to deduplicate by.
    key = (install.install_id, event["id"])
    if _already_posted(key):
        return

    settings = _settings
    url = check_webhook_url(install.config.get("webhook_url"), settings)
    post_message(url, build_message(event), settings)
    _remember(key)
    log.info("slack message posted", extra={"install_id": install.install_id,
                                            "event_id": event["id"]})
