"""``fkod plugin new``: the package it writes, the names it refuses, and that pip installs it."""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
import tomllib

import pytest

from fkod.cli import main
from fkod.scaffold import ScaffoldError, create_plugin, plugin_names


def test_scaffold_writes_package(tmp_path):
    target = create_plugin("acme-quizzes", tmp_path, publisher="acme-learning")

    assert target == tmp_path / "fkod-acme-quizzes"
    files = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert files == ["README.md", "fkod_acme_quizzes/__init__.py", "pyproject.toml",
                     "tests/test_fkod_acme_quizzes.py"]
    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["name"] == "fkod-acme-quizzes"
    assert project["project"]["entry-points"]["fkod.plugins"] == {
        "acme_quizzes": "fkod_acme_quizzes"}
    module = (target / "fkod_acme_quizzes" / "__init__.py").read_text()
    assert 'PUBLISHER = "acme-learning"' in module
    assert '"^user_[0-9]+$"' in module
    for path in target.rglob("*.py"):
        py_compile.compile(str(path), cfile=str(tmp_path / "compiled.pyc"), doraise=True)


def test_plugin_names_derived():
    names = plugin_names("fkod-acme_quizzes")
    assert names.distribution == "fkod-acme-quizzes"
    assert names.module == "fkod_acme_quizzes"
    assert names.entry_point == "acme_quizzes"
    assert names.slug == "acme-quizzes"
    assert names.event_type == "acme_quizzes.sample_created"
    assert names.title == "Acme Quizzes"


@pytest.mark.parametrize("name", ["", "Quizzes", "acme quizzes", "1quiz", "acme--quiz",
                                  "quiz-", "fkod-", "class", "../evil", "a/b", "x" * 41,
                                  "quiz.v2"])
def test_scaffold_rejects_bad_name(tmp_path, name):
    with pytest.raises(ScaffoldError, match="invalid plugin name"):
        create_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_scaffold_rejects_existing_directory(tmp_path):
    (tmp_path / "fkod-quizzes").mkdir()
    with pytest.raises(ScaffoldError, match="already exists"):
        create_plugin("quizzes", tmp_path)


def test_scaffold_rejects_missing_parent(tmp_path):
    with pytest.raises(ScaffoldError, match="does not exist"):
        create_plugin("quizzes", tmp_path / "missing")


def test_scaffold_rejects_bad_publisher(tmp_path):
    with pytest.raises(ScaffoldError, match="invalid publisher"):
        create_plugin("quizzes", tmp_path, publisher="Acme Learning")


def test_cli_plugin_new(tmp_path, capsys):
    assert main(["plugin", "new", "quizzes", "--dir", str(tmp_path)]) == 0
    assert "fkod-quizzes" in capsys.readouterr().out
    assert (tmp_path / "fkod-quizzes" / "pyproject.toml").is_file()

    assert main(["plugin", "new", "quizzes", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["plugin", "new", "Quizzes!", "--dir", str(tmp_path)]) == 2
    assert "invalid plugin name" in capsys.readouterr().err


def test_generated_package_installs_and_passes(tmp_path):
    target = create_plugin("scaffold-probe", tmp_path, publisher="acme-learning")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(target)],
                   check=True, capture_output=True, timeout=120)
    environment = {**os.environ, "PYTHONPATH": str(site)}

    probe = ("import importlib.metadata, json; print(json.dumps({e.name: e.value for e in "
             "importlib.metadata.entry_points(group='fkod.plugins')}))")
    found = subprocess.run([sys.executable, "-c", probe], env=environment, cwd=tmp_path,
                           check=True, capture_output=True, text=True, timeout=60)
    assert json.loads(found.stdout)["scaffold_probe"] == "fkod_scaffold_probe"

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(target / "tests")], env=environment, cwd=target,
                           capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "3 passed" in tests.stdout
