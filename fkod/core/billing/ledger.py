"""The double-entry ledger: every movement of money is a balanced, append-only transaction.

An entry's amount is positive for a debit and negative for a credit, and the
entries of one transaction add up to zero. Nothing is ever updated or
deleted: a correction is a new transaction. Each transaction has a unique
``reference`` naming what caused it, so posting the same fact twice is a
no-op that returns the first posting.

Accounts (``partner_id`` is set on the partner's own accounts):

``receivable``
    Invoiced and not yet collected (debit-normal).
``cash``
    Money held at the payment providers (debit-normal).
``plan_revenue``
    F-KOD's income from plan fees and overage (credit-normal).
``commission``
    F-KOD's commission on partner revenue (credit-normal).
``marketplace_funding``
    Per-call revenue F-KOD owes integrations from its own income (debit-normal).
``partner_payable``
    What F-KOD owes the partner: its balance (credit-normal, so the balance
    is the negated sum of its entries).
``payouts_in_transit``
    Payouts sent or about to be sent and not yet confirmed (credit-normal).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import sqlalchemy as sa

from fkod.core.billing.models import LedgerEntry, LedgerTransaction
from fkod.core.billing.money import CURRENCY, ZERO, round_cents

RECEIVABLE = "receivable"
CASH = "cash"
PLAN_REVENUE = "plan_revenue"
COMMISSION = "commission"
MARKETPLACE_FUNDING = "marketplace_funding"
PARTNER_PAYABLE = "partner_payable"
PAYOUTS_IN_TRANSIT = "payouts_in_transit"
ACCOUNTS = (RECEIVABLE, CASH, PLAN_REVENUE, COMMISSION, MARKETPLACE_FUNDING, PARTNER_PAYABLE,
            PAYOUTS_IN_TRANSIT)


class UnbalancedTransaction(ValueError):
    """The entries of a transaction do not add up to zero, or one is malformed."""


@dataclasses.dataclass(frozen=True)
class Line:
    """One entry to post: ``amount`` > 0 debits ``account``, < 0 credits it."""

    account: str
    amount: Decimal
    partner_id: int | None = None


def debit(account: str, amount: Decimal, partner_id: int | None = None) -> Line:
    return Line(account, round_cents(amount), partner_id)


def credit(account: str, amount: Decimal, partner_id: int | None = None) -> Line:
    return Line(account, -round_cents(amount), partner_id)


def check(lines: list[Line]) -> None:
    """Raise UnbalancedTransaction unless ``lines`` form a valid transaction."""
    if not lines:
        raise UnbalancedTransaction("a transaction needs at least one entry")
    for line in lines:
        if line.account not in ACCOUNTS:
            raise UnbalancedTransaction(f"unknown ledger account {line.account!r}")
        if line.amount != round_cents(line.amount):
            raise UnbalancedTransaction(f"amount {line.amount} is not in whole cents")
        if (line.account == PARTNER_PAYABLE) != (line.partner_id is not None):
            rule = "needs" if line.account == PARTNER_PAYABLE else "takes no"
            raise UnbalancedTransaction(f"account {line.account} {rule} partner")
    total = sum((line.amount for line in lines), ZERO)
    if total != 0:
        raise UnbalancedTransaction(f"entries add up to {total}, not 0")


def post(session, *, kind: str, reference: str, description: str,
         lines: list[Line]) -> tuple[LedgerTransaction, bool]:
    """Post a balanced transaction once; return it and whether it was new.

    Zero-amount lines are dropped. A transaction whose ``reference`` was
    posted before is returned as it is, whatever ``lines`` contain now.
    """
    existing = session.scalar(
        sa.select(LedgerTransaction).where(LedgerTransaction.reference == reference))
    if existing is not None:
        return existing, False
    lines = [line for line in lines if line.amount != 0]
    if lines:
        check(lines)
    transaction = LedgerTransaction(kind=kind, reference=reference, description=description[:255])
    session.add(transaction)
    session.flush()
    session.add_all([
        LedgerEntry(transaction_id=transaction.id, account=line.account,
                    partner_id=line.partner_id, amount=line.amount, currency=CURRENCY)
        for line in lines
    ])
    session.flush()
    return transaction, True


def partner_balance(session, partner_id: int) -> Decimal:
    """Return what F-KOD owes the partner now: its ``partner_payable`` credit balance."""
    total = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.account == PARTNER_PAYABLE, LedgerEntry.partner_id == partner_id))
    return ZERO - round_cents(Decimal(total))


def account_balances(session) -> dict[str, Decimal]:
    """Return the debit balance of every account, summed over partners."""
    rows = session.execute(
        sa.select(LedgerEntry.account, sa.func.sum(LedgerEntry.amount))
        .group_by(LedgerEntry.account)).all()
    return {account: round_cents(Decimal(total)) for account, total in rows}


def unbalanced_transactions(session) -> list[int]:
    """Return the ids of transactions whose entries do not add up to zero (none, normally)."""
    rows = session.execute(
        sa.select(LedgerEntry.transaction_id)
        .group_by(LedgerEntry.transaction_id)
        # SQLite sums NUMERIC as floating point, so "not zero" means half a cent or more.
        .having(sa.func.abs(sa.func.sum(LedgerEntry.amount)) >= Decimal("0.005"))).all()
    return [row[0] for row in rows]
