"""Money rules: exact splits, allocation and the ledger's balance, for any amount and rate."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from fkod.core.billing import ledger
from fkod.core.billing.money import allocate, format_usd, percent_from_fraction, round_cents, split

CENTS = st.integers(min_value=-10**13, max_value=10**13).map(lambda cents: Decimal(cents) / 100)
RATES = st.integers(min_value=0, max_value=10_000).map(lambda basis: Decimal(basis) / 100)


@given(gross=CENTS, rate=RATES)
def test_split_adds_up_to_the_gross(gross, rate):
    commission, share = split(gross, rate)
    assert commission + share == gross
    assert commission == round_cents(commission)
    assert share == round_cents(share)
    # The commission is the rate's share of the gross to within half a cent.
    assert abs(commission - gross * rate / 100) <= Decimal("0.005")


@given(gross=CENTS, rate=RATES)
def test_reversal_is_the_exact_negative(gross, rate):
    commission, share = split(gross, rate)
    assert split(-gross, rate) == (-commission, -share)


@given(total=CENTS, weights=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1,
                                     max_size=20))
def test_allocation_sums_to_the_total(total, weights):
    parts = allocate(total, [Decimal(weight) for weight in weights])
    assert sum(parts, Decimal(0)) == total
    assert all(part == round_cents(part) for part in parts)


def test_spec_example():
    gross = round_cents(1_000_000 * Decimal("0.001"))
    assert (gross, *split(gross, Decimal(30))) == (Decimal("1000.00"), Decimal("300.00"),
                                                   Decimal("700.00"))


@pytest.mark.parametrize(("gross", "rate", "expected"), [
    (Decimal("0.05"), Decimal("30"), (Decimal("0.02"), Decimal("0.03"))),  # 0.015 rounds up
    (Decimal("-0.05"), Decimal("30"), (Decimal("-0.02"), Decimal("-0.03"))),
    (Decimal("19.99"), Decimal("30"), (Decimal("6.00"), Decimal("13.99"))),
    (Decimal("100.00"), Decimal("0"), (Decimal("0.00"), Decimal("100.00"))),
    (Decimal("100.00"), Decimal("100"), (Decimal("100.00"), Decimal("0.00"))),
    (Decimal("33.33"), Decimal("12.5"), (Decimal("4.17"), Decimal("29.16"))),
])
def test_split_rounds_half_up(gross, rate, expected):
    assert split(gross, rate) == expected


def test_helpers():
    assert percent_from_fraction(Decimal("0.3")) == Decimal("30.00")
    assert percent_from_fraction(Decimal("0.1234")) == Decimal("12.34")
    assert format_usd(Decimal("1234.5")) == "$1,234.50"
    assert format_usd(Decimal("-3")) == "-$3.00"
    assert allocate(Decimal("10.00"), [Decimal(0), Decimal(0)]) == [Decimal("0.00"),
                                                                     Decimal("10.00")]


# The ledger ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    engine = sa.create_engine("sqlite://")
    ledger.LedgerTransaction.__table__.create(engine)
    ledger.LedgerEntry.__table__.create(engine)
    return engine


def test_unbalanced_lines_are_refused():
    with pytest.raises(ledger.UnbalancedTransaction, match="add up to"):
        ledger.check([ledger.debit(ledger.CASH, Decimal("1")),
                      ledger.credit(ledger.PLAN_REVENUE, Decimal("0.99"))])
    with pytest.raises(ledger.UnbalancedTransaction, match="needs partner"):
        ledger.check([ledger.debit(ledger.CASH, Decimal("1")),
                      ledger.credit(ledger.PARTNER_PAYABLE, Decimal("1"))])
    with pytest.raises(ledger.UnbalancedTransaction, match="unknown"):
        ledger.check([ledger.Line("bank", Decimal("1")), ledger.Line("cash", Decimal("-1"))])
    with pytest.raises(ledger.UnbalancedTransaction, match="whole cents"):
        ledger.check([ledger.Line("cash", Decimal("0.001")),
                      ledger.Line("plan_revenue", Decimal("-0.001"))])


OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["sale", "refund", "payout", "payout_failed", "payout_paid"]),
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=1, max_value=10**8).map(lambda cents: Decimal(cents) / 100),
    RATES,
), max_size=40)


@settings(max_examples=60, deadline=None)
@given(operations=OPERATIONS)
def test_any_sequence_of_postings_keeps_the_ledger_balanced(engine, operations):
    """Sales, refunds and payouts as the engine posts them never unbalance the ledger."""
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        expected = {1: Decimal(0), 2: Decimal(0), 3: Decimal(0)}
        for number, (kind, partner_id, amount, rate) in enumerate(operations):
            commission, share = split(amount, rate)
            if kind == "sale":
                lines = [ledger.debit(ledger.RECEIVABLE, amount),
                         ledger.credit(ledger.PARTNER_PAYABLE, share, partner_id),
                         ledger.credit(ledger.COMMISSION, commission)]
                expected[partner_id] += share
            elif kind == "refund":
                lines = [ledger.debit(ledger.PARTNER_PAYABLE, share, partner_id),
                         ledger.debit(ledger.COMMISSION, commission),
                         ledger.credit(ledger.CASH, amount)]
                expected[partner_id] -= share
            elif kind == "payout":
                lines = [ledger.debit(ledger.PARTNER_PAYABLE, amount, partner_id),
                         ledger.credit(ledger.PAYOUTS_IN_TRANSIT, amount)]
                expected[partner_id] -= amount
            elif kind == "payout_failed":
                lines = [ledger.debit(ledger.PAYOUTS_IN_TRANSIT, amount),
                         ledger.credit(ledger.PARTNER_PAYABLE, amount, partner_id)]
                expected[partner_id] += amount
            else:
                lines = [ledger.debit(ledger.PAYOUTS_IN_TRANSIT, amount),
                         ledger.credit(ledger.CASH, amount)]
            ledger.post(session, kind=kind, reference=f"op:{number}", description=kind,
                        lines=lines)
            # Posting the same reference again is a no-op.
            _transaction, new = ledger.post(session, kind=kind, reference=f"op:{number}",
                                            description=kind, lines=lines)
            assert new is False

        assert ledger.unbalanced_transactions(session) == []
        assert sum(ledger.account_balances(session).values(), Decimal(0)) == 0
        for partner_id, balance in expected.items():
            assert ledger.partner_balance(session, partner_id) == balance
        session.rollback()
