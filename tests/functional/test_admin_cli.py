"""``fkod admin create INI``: the first admin, from FKOD_ADMIN_PASSWORD or a prompt."""

from __future__ import annotations

import getpass

import pytest
import sqlalchemy as sa

from fkod import cli
from fkod.core.audit import AuditEntry
from fkod.core.auth.models import AdminUser
from fkod.core.db import run_in_transaction

PASSWORD = "first admin password"


def write_ini(path, settings: dict) -> str:
    lines = ["[app:main]", "use = egg:fkod"]
    # PasteDeploy interpolates %(name)s, so a literal % is doubled.
    lines += [f"{name} = {str(value).replace('%', '%%')}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def ini(stack_settings, tmp_path) -> str:
    return write_ini(tmp_path / "admin.ini", stack_settings)


def stored_admins(app) -> list[AdminUser]:
    return run_in_transaction(app.registry["db.session_factory"], lambda session: session.scalars(
        sa.select(AdminUser).order_by(AdminUser.id)).all())


def create(ini: str, *extra: str) -> int:
    return cli.main(["admin", "create", ini, "--email", "Root@Staff.fkod.example",
                     "--name", "Root Admin", *extra])


def test_create_from_environment(app, client, ini, monkeypatch, capsys):
    monkeypatch.setenv("FKOD_ADMIN_PASSWORD", PASSWORD)

    status = create(ini)

    output = capsys.readouterr()
    assert status == 0
    [admin] = stored_admins(app)
    assert admin.email == "root@staff.fkod.example"
    assert admin.role == "superadmin"
    assert admin.status == "active"
    assert f"admin_{admin.id}" in output.out
    assert PASSWORD not in output.out + output.err
    login = client.web.post_json("/api/admin/auth/login", {"email": "root@staff.fkod.example",
                                                           "password": PASSWORD})
    assert login.json["role"] == "superadmin"
    entries = run_in_transaction(app.registry["db.session_factory"], lambda session: session.
                                 scalars(sa.select(AuditEntry).where(
                                     AuditEntry.action == "admin.created")).all())
    assert [(entry.action, entry.actor_type, entry.target_id) for entry in entries] == [
        ("admin.created", "system", f"admin_{admin.id}")]


def test_create_with_role(app, ini, monkeypatch):
    monkeypatch.setenv("FKOD_ADMIN_PASSWORD", PASSWORD)

    status = create(ini, "--role", "finance")

    assert status == 0
    assert [admin.role for admin in stored_admins(app)] == ["finance"]


def test_duplicate_email_rejected(app, ini, monkeypatch, capsys):
    monkeypatch.setenv("FKOD_ADMIN_PASSWORD", PASSWORD)
    assert create(ini) == 0

    status = cli.main(["admin", "create", ini, "--email", "root@staff.FKOD.example",
                       "--name", "Someone Else"])

    assert status == 1
    assert "already exists" in capsys.readouterr().err
    assert len(stored_admins(app)) == 1


@pytest.mark.parametrize("password", ["short", "eleven char"])
def test_short_password_rejected(app, ini, monkeypatch, capsys, password):
    monkeypatch.setenv("FKOD_ADMIN_PASSWORD", password)

    status = create(ini)

    assert status == 2
    assert "invalid password" in capsys.readouterr().err
    assert stored_admins(app) == []


def test_invalid_email_rejected(app, ini, monkeypatch, capsys):
    monkeypatch.setenv("FKOD_ADMIN_PASSWORD", PASSWORD)

    status = cli.main(["admin", "create", ini, "--email", "nobody", "--name", "Root"])

    assert status == 2
    assert "invalid email" in capsys.readouterr().err
    assert stored_admins(app) == []


def test_unknown_role_rejected(ini, capsys):
    with pytest.raises(SystemExit) as exited:
        create(ini, "--role", "owner")

    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_password_prompted_twice(app, ini, monkeypatch):
    monkeypatch.delenv("FKOD_ADMIN_PASSWORD", raising=False)
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))

    status = create(ini)

    assert status == 0
    assert len(stored_admins(app)) == 1


def test_prompted_passwords_must_match(app, ini, monkeypatch, capsys):
    monkeypatch.delenv("FKOD_ADMIN_PASSWORD", raising=False)
    answers = iter([PASSWORD, PASSWORD + "!"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))

    status = create(ini)

    assert status == 2
    assert "do not match" in capsys.readouterr().err
    assert stored_admins(app) == []
