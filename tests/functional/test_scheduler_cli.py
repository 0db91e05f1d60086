"""``fkod jobs list`` and ``fkod jobs run``, on a job that a plugin adds."""

from __future__ import annotations

import datetime as dt

import pytest

from fkod import cli
from fkod.core.db import utcnow
from fkod.core.scheduler import claim, next_fire_time, schedule_for

pytestmark = pytest.mark.shared_app

PLUGIN = """
    from pathlib import Path

    from fkod.core.hookspecs import hookimpl
    from fkod.core.scheduler import ScheduledJob, schedule_for

    RECORD = Path({record!r})


    def close_period(argument):
        if argument == "fail":
            raise RuntimeError("the ledger is locked")
        with RECORD.open("a") as record:
            record.write(argument + "\\n")


    @hookimpl
    def fkod_include(config):
        config.registry["tasks"].actor(close_period, name="test.close_period")
        schedule_for(config.registry).add(ScheduledJob(
            "reports.monthly", "0 2 1 * *", "test.close_period", "Close last month."))
"""


def write_ini(path, settings: dict) -> str:
    lines = ["[app:main]", "use = egg:fkod-partner-platform"]
    # PasteDeploy reads %(name)s as a variable, so a literal % is doubled.
    lines += [f"{name} = {str(value).replace('%', '%%')}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def record(tmp_path):
    return tmp_path / "calls.txt"


@pytest.fixture
def ini(stack_settings, tmp_path, plugin_path, record) -> str:
    plugin_path("fkod-test-billing", "test_billing", "fkod_test_billing",
                PLUGIN.format(record=str(record)))
    return write_ini(tmp_path / "scheduler.ini", stack_settings)


def calls(record) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def test_run_unknown_job(ini, capsys):
    status = cli.main(["jobs", "run", ini, "reports.month"])

    assert status == 2
    error = capsys.readouterr().err
    assert "no scheduled job is called 'reports.month'" in error
    assert ("the jobs are: alerts.key_expiry, alerts.usage_anomaly, billing.close_period, "
            "billing.payout_run, reports.monthly") in error


def test_run_inline(ini, record, capsys):
    status = cli.main(["jobs", "run", ini, "reports.monthly", "--inline",
                       "--argument", "2026-11"])

    assert status == 0
    assert calls(record) == ["2026-11"]
    assert "ran reports.monthly (test.close_period) with '2026-11'" in capsys.readouterr().out


def test_run_inline_failure(ini, record, capsys):
    status = cli.main(["jobs", "run", ini, "reports.monthly", "--inline",
                       "--argument", "fail"])

    assert status == 1
    assert "RuntimeError: the ledger is locked" in capsys.readouterr().err
    assert calls(record) == []


def test_run_sends_the_current_time(ini, stack_settings, record, capsys):
    if stack_settings.get("fkod.tasks.broker") == "redis":
        pytest.skip("with Redis an fkod worker runs the message, not the command")
    before = utcnow().replace(microsecond=0)

    status = cli.main(["jobs", "run", ini, "reports.monthly"])

    assert status == 0
    # The in-process broker runs the message before the command returns.
    assert "on the in-process worker" in capsys.readouterr().out
    [argument] = calls(record)
    sent = dt.datetime.fromisoformat(argument.removesuffix("Z"))
    assert argument.endswith("Z")
    assert before <= sent <= utcnow()


@pytest.mark.shared_app(False)
def test_list_prints_next_fire_and_last_run(ini, app_factory, capsys):
    app = app_factory()
    claim(app.registry["db.session_factory"], "reports.monthly",
          dt.datetime(2026, 12, 1, 2), "catch_up", "host-a")
    job = schedule_for(app.registry).get("reports.monthly")

    status = cli.main(["jobs", "list", ini])

    assert status == 0
    out = capsys.readouterr().out
    assert "reports.monthly  Close last month." in out
    assert "  cron      0 2 1 * * (UTC)" in out
    assert "  actor     test.close_period" in out
    next_fire = next_fire_time(job).isoformat(timespec="seconds") + "Z"
    assert f"  next      {next_fire}" in out
    assert "  last run  2026-12-01T02:00:00Z (catch_up, sent " in out


def test_list_never_run(ini, capsys):
    assert cli.main(["jobs", "list", ini]) == 0

    assert "  last run  never" in capsys.readouterr().out


def test_jobs_needs_a_subcommand(ini):
    with pytest.raises(SystemExit) as raised:
        cli.main(["jobs", ini])

    assert raised.value.code == 2


@pytest.mark.shared_app(False)
def test_billing_jobs_run_from_the_command(ini, app, client, capsys):
    from decimal import Decimal

    from fkod.core.billing.models import Invoice, InvoiceLine, Payout
    from tests.functional.test_billing_engine import (
        add_usage,
        balance,
        credit_partner,
        new_partner,
        rows,
    )

    billed = new_partner(client, plan="starter")
    add_usage(app, partner_id=billed, hour=dt.datetime(2026, 11, 30, 23), count=300_250)
    vault = app.registry["webhook_vault"]
    paid = new_partner(client, payout_method="bank_transfer",
                       bank_account=vault.encrypt("DE89 3704 0044 0532 0130 00"))
    credit_partner(app, paid, Decimal("180.00"), "t:cli")

    closed = cli.main(["jobs", "run", ini, "billing.close_period", "--argument", "2026-11",
                       "--inline"])
    paid_out = cli.main(["jobs", "run", ini, "billing.payout_run", "--inline"])

    assert (closed, paid_out) == (0, 0)
    out = capsys.readouterr().out
    assert "ran billing.close_period (billing.close_period) with '2026-11'" in out
    invoice, = rows(app, Invoice, Invoice.partner_id == billed)
    assert (invoice.period_start, invoice.total) == (dt.date(2026, 11, 1), Decimal("99.25"))
    assert [line.kind for line in rows(app, InvoiceLine, InvoiceLine.invoice_id == invoice.id)] \
        == ["plan_fee", "overage"]
    payout, = rows(app, Payout, Payout.partner_id == paid)
    assert (payout.amount, payout.source, payout.status) == (Decimal("180.00"), "run",
                                                             "processing")
    assert balance(app, paid) == Decimal("0.00")

    # A second close finds the month closed, and a second run finds the payout open.
    assert cli.main(["jobs", "run", ini, "billing.close_period", "--argument", "2026-11",
                     "--inline"]) == 0
    assert len(rows(app, Invoice, Invoice.partner_id == billed)) == 1
    assert len(rows(app, Payout)) == 1
