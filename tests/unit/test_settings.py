"""Settings: parsing, environment overrides and the errors that stop start-up."""

from __future__ import annotations

import pytest

from fkod.core.settings import ConfigurationError, env_name, load_settings

REQUIRED = {
    "fkod.db.url": "sqlite://",
    "fkod.secrets.api_key_pepper": "p" * 32,
    "fkod.secrets.webhook_encryption_key": "k",
}


def test_defaults_are_parsed():
    settings = load_settings(REQUIRED, environ={})
    assert settings["fkod.webhooks.timeout_seconds"] == 10.0
    assert settings["fkod.webhooks.allow_loopback"] is False
    assert settings["fkod.plugins.disabled"] == []


def test_environment_overrides_file():
    settings = load_settings({**REQUIRED, "fkod.webhooks.allow_loopback": "false"},
                             environ={"FKOD_WEBHOOKS_ALLOW_LOOPBACK": "true"})
    assert settings["fkod.webhooks.allow_loopback"] is True


def test_env_reference_reads_variable():
    raw = {**REQUIRED, "fkod.db.url": "env:MY_DATABASE"}
    settings = load_settings(raw, environ={"MY_DATABASE": "postgresql+psycopg://db/x"})
    assert settings["fkod.db.url"] == "postgresql+psycopg://db/x"


def test_env_reference_missing_names_both():
    raw = {**REQUIRED, "fkod.db.url": "env:MY_DATABASE"}
    with pytest.raises(ConfigurationError) as caught:
        load_settings(raw, environ={})
    assert "fkod.db.url" in str(caught.value)
    assert "MY_DATABASE" in str(caught.value)


def test_missing_setting_names_it():
    raw = {key: value for key, value in REQUIRED.items() if key != "fkod.db.url"}
    with pytest.raises(ConfigurationError, match=r"missing setting fkod\.db\.url.*FKOD_DB_URL"):
        load_settings(raw, environ={})


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("fkod.webhooks.allow_loopback", "maybe", "expected true or false"),
    ("fkod.webhooks.timeout_seconds", "ten", "fkod.webhooks.timeout_seconds"),
    ("fkod.webhooks.timeout_seconds", "0", "expected at least 0.1"),
    ("fkod.ratelimit.backend", "memcached", "expected one of memory, redis"),
    ("fkod.ratelimit.sub_buckets", "5000", "expected at most 1000"),
])
def test_invalid_value_explains_rule(name, value, expected):
    with pytest.raises(ConfigurationError, match=expected):
        load_settings({**REQUIRED, name: value}, environ={})


def test_invalid_value_names_source():
    with pytest.raises(ConfigurationError) as caught:
        load_settings(REQUIRED, environ={"FKOD_WEBHOOKS_TIMEOUT_SECONDS": "x"})
    assert "'x'" in str(caught.value)
    assert "environment variable FKOD_WEBHOOKS_TIMEOUT_SECONDS" in str(caught.value)


def test_unknown_fkod_setting_rejected():
    with pytest.raises(ConfigurationError, match="unknown setting fkod.webhooks.alow_loopback"):
        load_settings({**REQUIRED, "fkod.webhooks.alow_loopback": "true"}, environ={})


def test_other_settings_pass_through():
    settings = load_settings({**REQUIRED, "pyramid.reload_templates": "true"}, environ={})
    assert settings["pyramid.reload_templates"] == "true"


def test_env_name_form():
    assert env_name("fkod.webhooks.allow_loopback") == "FKOD_WEBHOOKS_ALLOW_LOOPBACK"
