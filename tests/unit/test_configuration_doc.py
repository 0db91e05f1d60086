"""docs/configuration.md must match what docs/generate_configuration.py renders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fkod.core.settings import SETTINGS, env_name

DOCS = Path(__file__).resolve().parents[2] / "docs"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_configuration",
                                                  DOCS / "generate_configuration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_current():
    generator = load_generator()
    page = (DOCS / "configuration.md").read_text()

    assert page == generator.render(), (
        "docs/configuration.md is out of date: "
        "run .venv/bin/python docs/generate_configuration.py")


def test_configuration_page_lists_every_setting():
    rendered = load_generator().render()

    for setting in SETTINGS:
        assert f"| `{setting.name}`<br>`{env_name(setting.name)}` |" in rendered
        assert setting.help.replace("|", "\\|") in rendered


def test_configuration_page_marks_secrets_and_required():
    rendered = load_generator().render()
    rows = {line.split("`")[1]: line for line in rendered.splitlines()
            if line.startswith("| `fkod.")}

    assert "secret" in rows["fkod.secrets.api_key_pepper"]
    assert "| required |" in rows["fkod.db.url"]
    assert "secret" not in rows["fkod.db.url"]
    # The machine-specific absolute default is described, not printed.
    assert "beside the `fkod` package" in rows["fkod.developers.sdk_dir"]
