"""What a plugin declares about the integrations it ships, and what their hooks receive.

A plugin returns :class:`IntegrationManifest` objects from the
``fkod_register_integrations`` hook. The platform syncs each one into the
marketplace catalog at start-up, tied to the partner whose slug is the
manifest's ``publisher``. When a customer installs, uninstalls, or an event
reaches an install, the owning plugin's hooks receive an :class:`InstallContext`.
"""

from __future__ import annotations

import dataclasses
import re

import jsonschema

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$")
VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.-]+)?$")
CATEGORIES = ("analytics", "communication", "content", "crm", "productivity", "scheduling",
              "payments", "assessment", "other")
PRICING_MODELS = ("free", "freemium", "paid")


class IntegrationError(Exception):
    """Raised by an install or event hook to refuse with a message the customer may read.

    An install hook that raises it refuses the install with a 422 whose
    message is ``str(error)``; any other exception is a fault of the plugin.
    """


@dataclasses.dataclass(frozen=True)
class IntegrationManifest:
    """An integration as its plugin describes it.

    ``publisher`` is the slug of the partner that owns the integration.
    ``scopes`` are granted to an install; ``event_types`` are the event types
    (or patterns such as ``course.*``) the integration reacts to;
    ``config_schema`` is the JSON Schema an install's configuration must
    satisfy. ``price_cents`` is the monthly USD price when ``pricing_model`` is
    ``paid``. ``plugin`` is filled in by the platform.
    """

    slug: str
    name: str
    publisher: str
    category: str
    description: str
    version: str
    scopes: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    config_schema: dict | None = None
    pricing_model: str = "free"
    price_cents: int | None = None
    logo_url: str | None = None
    documentation_url: str | None = None
    support_url: str | None = None
    support_email: str | None = None
    release_notes: str | None = None
    plugin: str | None = None

    def __post_init__(self):
        problems = []
        if not SLUG.match(self.slug):
            problems.append(f"slug {self.slug!r} is not lowercase letters, digits and hyphens")
        if not SLUG.match(self.publisher):
            problems.append(f"publisher {self.publisher!r} is not a partner slug")
        if not 1 <= len(self.name) <= 255:
            problems.append("name must be 1 to 255 characters")
        if self.category not in CATEGORIES:
            problems.append(f"category {self.category!r} is not one of {', '.join(CATEGORIES)}")
        if not VERSION.match(self.version) or len(self.version) > 20:
            problems.append(f"version {self.version!r} is not a version such as 1.2.0")
        if self.pricing_model not in PRICING_MODELS:
            problems.append(f"pricing_model {self.pricing_model!r} is not one of "
                            f"{', '.join(PRICING_MODELS)}")
        elif (self.pricing_model == "paid") != (self.price_cents is not None):
            problems.append("price_cents is required for paid integrations and only for them")
        if self.price_cents is not None and not 0 < self.price_cents <= 100_000_00:
            problems.append("price_cents must be between 1 and 10000000")
        if self.config_schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(self.config_schema)
            except jsonschema.SchemaError as exc:
                problems.append(f"config_schema is not a valid JSON Schema: {exc.message}")
        if problems:
            raise ValueError(f"integration manifest {self.slug!r}: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class InstallContext:
    """One customer's install of an integration, as its plugin's hooks see it.

    ``config`` is the decrypted install configuration, already valid against
    the manifest's ``config_schema``. Ids are public ids (``inst_12``,
    ``user_34``).
    """

    install_id: str
    integration_slug: str
    user_id: str
    config: dict
    granted_scopes: tuple[str, ...]
