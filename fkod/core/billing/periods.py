"""Billing periods: calendar months in UTC, half-open so no moment belongs to two.

A period holds every moment ``start_at <= t < end_at``; a call at
23:59:59.999 on the last day of a month belongs to that month and the first
instant of the next month does not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


@dataclasses.dataclass(frozen=True, order=True)
class Period:
    """One calendar month, UTC."""

    year: int
    month: int

    def __post_init__(self):
        if not 1 <= self.month <= 12 or not 2000 <= self.year <= 9998:
            raise ValueError(f"{self.year:04d}-{self.month:02d} is not a month from 2000 on")

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``YYYY-MM``; ValueError with the rule otherwise."""
        match = _PERIOD.match(text or "")
        if not match:
            raise ValueError("must be a month written YYYY-MM, such as 2026-11")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, moment: dt.datetime | dt.date) -> Period:
        return cls(moment.year, moment.month)

    @property
    def start(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def end(self) -> dt.date:
        """The last day of the month."""
        return self.next().start - dt.timedelta(days=1)

    @property
    def start_at(self) -> dt.datetime:
        return dt.datetime(self.year, self.month, 1)

    @property
    def end_at(self) -> dt.datetime:
        """The first instant after the month (exclusive)."""
        return self.next().start_at

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
