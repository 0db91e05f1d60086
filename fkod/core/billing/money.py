"""Exact money arithmetic: every amount is a Decimal in USD, every rounding rule is here.

Rounding is always half up (half away from zero) to the cent, so a refund
line rounds to the exact negative of the sale it reverses.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "USD"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)


def round_cents(value: Decimal) -> Decimal:
    """Round ``value`` to the cent, half away from zero."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def split(gross: Decimal, rate_percent: Decimal) -> tuple[Decimal, Decimal]:
    """Split ``gross`` into F-KOD's commission and the partner's share.

    The commission is ``gross × rate / 100`` rounded half up to the cent; the
    partner's share is what remains, so the two always add up to ``gross``
    exactly and no cent is created or lost.
    """
    gross = round_cents(gross)
    commission = round_cents(gross * Decimal(rate_percent) / HUNDRED)
    return commission, gross - commission


def allocate(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Divide ``total`` over ``weights`` in proportion, in whole cents, summing to ``total``.

    Each part is rounded half up to the cent except the last, which takes
    what remains. All weights zero gives the whole total to the last part.
    """
    if not weights:
        return []
    total = round_cents(total)
    whole = sum(weights, Decimal(0))
    parts = []
    for weight in weights[:-1]:
        parts.append(round_cents(total * weight / whole) if whole else ZERO)
    parts.append(total - sum(parts, ZERO))
    return parts


def percent_from_fraction(fraction: Decimal) -> Decimal:
    """Turn a stored rate such as 0.3000 into percent with two places (30.00)."""
    return round_cents(Decimal(fraction) * HUNDRED)


def format_usd(amount: Decimal) -> str:
    """Format an amount for messages: ``$1,234.50``, ``-$3.00``."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(round_cents(amount)):,.2f}"
