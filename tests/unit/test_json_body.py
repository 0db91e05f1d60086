"""Decoding request bodies: integers too long for any field are refused plainly."""

from __future__ import annotations

import pytest

from fkod.core.api import MAX_INT_DIGITS, parse_json_object
from fkod.core.errors import ValidationFailed


@pytest.mark.parametrize("digits", [MAX_INT_DIGITS + 1, 5000])
@pytest.mark.parametrize("sign", ["", "-"])
def test_overlong_integer_refused(digits, sign):
    raw = b'{"retry_count": ' + sign.encode() + b"9" * digits + b"}"

    with pytest.raises(ValidationFailed) as raised:
        parse_json_object(raw)

    assert raised.value.code == "invalid_json"
    assert raised.value.message == (
        f"The request body has a number of more than {MAX_INT_DIGITS} digits.")
    assert "sys.set_int_max_str_digits" not in raised.value.message


def test_longest_allowed_integer_decoded():
    raw = b'{"n": -' + b"9" * MAX_INT_DIGITS + b', "m": 0.5}'

    assert parse_json_object(raw) == {"n": -int("9" * MAX_INT_DIGITS), "m": 0.5}
