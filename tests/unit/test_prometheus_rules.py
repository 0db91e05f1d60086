"""deploy/prometheus/alerts.yml: valid rule groups whose expressions use only exported metrics.

promtool is not available, so this checks the structure of the file and the
metric names of every expression: each must be one GET /metrics exports
(fkod.core.metrics.exported_metric_names) or ``up``, which Prometheus writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from fkod.core.metrics import exported_metric_names

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"

PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset",
    # binary operators written as words
    "and", "or", "unless",
    # functions
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile",
    "clamp_min", "clamp_max", "clamp", "abs", "absent", "absent_over_time", "avg_over_time",
    "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "changes", "resets",
    "time", "timestamp", "vector", "scalar", "label_replace", "label_join", "predict_linear",
    "round", "ceil", "floor", "sort", "sort_desc", "day_of_week", "hour",
    # literals
    "inf", "nan",
}
DURATION = re.compile(r"\[[0-9smhdwy:]+\]")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHERS = re.compile(r"\{[^}]*\}")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![0-9.])\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    text = STRING.sub(" ", expr)
    text = MATCHERS.sub(" ", text)
    text = DURATION.sub(" ", text)
    text = GROUPING.sub(" ", text)
    # Exponents such as 1e-9 are numbers, not names.
    text = re.sub(r"\b[0-9]+(\.[0-9]+)?e[-+]?[0-9]+\b", " ", text)
    return {name for name in IDENTIFIER.findall(text) if name.lower() not in PROMQL_WORDS}


def load_rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    rules = []
    names = set()
    for group in document["groups"]:
        assert group["name"] and group["name"] not in names
        names.add(group["name"])
        assert group["rules"]
        rules.extend(group["rules"])
    return rules


def test_rules_are_well_formed():
    alerts = set()
    for rule in load_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert rule["alert"] not in alerts, f"duplicate alert {rule['alert']}"
        alerts.add(rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert rule["expr"].count("(") == rule["expr"].count(")")
        assert rule["expr"].count("{") == rule["expr"].count("}")
        if "for" in rule:
            assert re.fullmatch(r"[0-9]+[smhd]", rule["for"])
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]


def test_every_expression_names_an_exported_metric():
    exported = exported_metric_names() | {"up"}
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric in {rule['expr']!r}"
        unknown = names - exported
        assert not unknown, f"{rule['alert']} uses metrics the app does not export: {unknown}"


def test_the_required_alerts_are_there():
    used = {name for rule in load_rules() for name in metric_names(rule["expr"])}
    assert "up" in used
    assert "fkod_http_requests_total" in used  # error rate
    assert "fkod_http_request_duration_seconds_bucket" in used  # latency p95
    assert "fkod_webhook_backlog" in used
    assert "fkod_webhook_outbox_lag_seconds" in used
    exprs = " ".join(rule["expr"] for rule in load_rules())
    assert "histogram_quantile(0.95" in exprs


def test_the_checker_finds_unknown_names():
    assert metric_names('sum(rate(fkod_nope_total{job="fkod"}[5m])) by (route) > 1e-9') == {
        "fkod_nope_total"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))") == {
        "x_bucket"}
