"""deploy/grafana/npay-billing.json: valid dashboard JSON whose every query names a metric that
``npay-billing metrics`` really exposes (worker.metrics counters, database gauges)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client.metrics_core import Metric

import worker.metrics  # noqa: F401 - registers the workers' counters and histogram
from tests.services import ROOT
from worker.metrics_server import DatabaseCollector

DASHBOARD = ROOT / "deploy" / "grafana" / "npay-billing.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exposed_names(families: Iterable[Metric]) -> set[str]:
    """The sample names Prometheus sees for these metric families."""
    return {family.name + suffix for family in families for suffix in SUFFIXES.get(family.type, ("",))}


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_the_dashboard_is_valid_json_with_unique_panels_and_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "npay-billing"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert all(t["datasource"]["uid"] == "${datasource}" and t["expr"] for t in targets(dashboard))
    for target in targets(dashboard):  # balanced brackets: a cheap check of each PromQL
        expr = target["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_every_metric_the_dashboard_queries_is_exposed(sqlite_db):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queried = {name for t in targets(dashboard) for name in re.findall(r"\bnpay_[a-z_]+", t["expr"])}
    queried |= set(re.findall(r"\bnpay_[a-z_]+", json.dumps(dashboard["templating"])))
    exposed = exposed_names(prometheus_client.REGISTRY.collect())
    exposed |= exposed_names(DatabaseCollector(sqlite_db.sessions).collect())

    assert queried - exposed == set()
    # The brief's panels: charges by outcome, retries, walk lag, unknown outcomes, NAVER latency.
    assert {"npay_charges_total", "npay_retries_scheduled_total", "npay_walk_lag_seconds",
            "npay_unknown_outcomes_open", "npay_naverpay_request_seconds_bucket"} <= queried
