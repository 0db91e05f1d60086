"""Public ids: one spelling per row, anything else a 404."""

from __future__ import annotations

import pytest

from fkod.core.errors import NotFound
from fkod.core.ids import parse_id, try_parse_id


def test_parse_id_reads_number():
    assert parse_id("int", "int_42") == 42


@pytest.mark.parametrize("value", ["int_01", "int_007", "int_00", "int_+1", "int_1.0", "int_",
                                   "int_٣", "user_1", "int_2147483648", 7, None])
def test_parse_id_rejects_other_spellings(value):
    with pytest.raises(NotFound):
        parse_id("int", value)


def test_try_parse_id_returns_none():
    assert try_parse_id("int", "int_01") is None
    assert try_parse_id("int", "int_0") == 0
