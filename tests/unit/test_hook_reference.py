"""The hook reference in docs/plugins.md covers every hook specification."""

from __future__ import annotations

import inspect
from pathlib import Path

from fkod.core import hookspecs

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def hook_specifications():
    return [name for name, value in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("fkod_")]


def test_every_hook_documented():
    text = REFERENCE.read_text()
    missing = [name for name in hook_specifications() if f"### `{name}(" not in text]
    assert missing == []


def test_every_hook_has_docstring():
    undocumented = [name for name in hook_specifications()
                    if not (getattr(hookspecs, name).__doc__ or "").strip()]
    assert undocumented == []
