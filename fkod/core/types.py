"""Column types shared by the models, portable between PostgreSQL and SQLite."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# JSONB on PostgreSQL, as the spec's columns are; JSON text on SQLite.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Money is exact: NUMERIC(15, 2) everywhere, read back as Decimal.
Money = sa.Numeric(15, 2, asdecimal=True)
