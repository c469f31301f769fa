"""deploy/observability: the alert rules and the Grafana dashboard, checked the way Prometheus and
Grafana would load them, and against the metrics the code exports.

- every rule group and rule has the fields Prometheus requires (promtool's `check rules` checks);
- every expression parses as PromQL (promql-parser: the Rust parser Prometheus-compatible tools use);
- every metric an expression names is exported by the API (api/metrics.py) or the gateway
  (gateway/metrics.py), and every label a selector or a `by` names exists on it;
- the dashboard is Grafana dashboard JSON: unique panel ids, targets with refIds and
  expressions, every panel on the `${datasource}` variable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from api import metrics as api_metrics
from gateway import metrics as gateway_metrics
from storage.repositories.metrics import Histogram, PublishingSnapshot
from tests.deploy.manifests import DEPLOY

OBSERVABILITY = DEPLOY / "observability"
RULES = OBSERVABILITY / "prometheus" / "alerts.yaml"
DASHBOARD = OBSERVABILITY / "grafana" / "marketplace.json"
# Labels Prometheus adds to every scraped series, and series it makes itself.
TARGET_LABELS = {"job", "instance"}
BUILT_IN = {"up": set[str]()}
SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
# Grafana's own variables, replaced by values before an expression reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _exposed(family: Metric, labels: tuple[str, ...]) -> Iterator[tuple[str, set[str]]]:
    """The series names a family appears under in the text exposition, with their labels."""
    names = {
        "counter": [f"{family.name}_total"],
        "histogram": [f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"],
        "summary": [f"{family.name}_sum", f"{family.name}_count"],
        "info": [f"{family.name}_info"],
    }.get(family.type, [family.name])
    for name in names:
        yield name, {*labels, "le"} if name.endswith("_bucket") else set(labels)


def _labels_of(metric: Any) -> tuple[str, ...]:
    """Declared label names of a metric object or a custom collector's family (prometheus_client keeps
    them as `_labelnames`; a family without them lists its samples' labels)."""
    declared = getattr(metric, "_labelnames", None)
    if declared is not None:
        return tuple(declared)
    return tuple({label for sample in metric.samples for label in sample.labels})


@cache
def exported() -> dict[str, set[str]]:
    """Every series name the API and the gateway export, with its labels."""
    found: dict[str, set[str]] = dict(BUILT_IN)
    for registry in (api_metrics.REGISTRY, gateway_metrics.REGISTRY):
        collectors = list(registry._collector_to_names)  # the registered collectors
        for collector in collectors:
            if collector is api_metrics.PUBLISHING:
                continue  # queries the database: its families come from an empty snapshot below
            for family in collector.collect():
                found.update(_exposed(family, _labels_of(collector if hasattr(collector, "_labelnames") else family)))
    publishing = [
        # what PublishingCollector yields from a reading (an empty one: no database needed)
        *api_metrics._families(PublishingSnapshot(publish_duration=Histogram([0] * len(api_metrics.PUBLISH_BUCKETS)))),
        *api_metrics.PUBLISHING.collect(),  # the two gauges about the reading itself
    ]
    for family in publishing:
        found.update(_exposed(family, _labels_of(family)))
    return found


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, labels it is matched or grouped on) of every selector in the expression."""
    tree = promql_parser.parse(expr)
    found: list[tuple[str, set[str]]] = []
    grouped: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name for m in node.matchers.matchers}))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouped.update(node.modifier.labels)
        return True

    promql_parser.walk(tree, visit)
    # a `by` names labels of the selectors below it: each must carry it (checked per metric below)
    return [(name, labels | grouped) for name, labels in found]


def unknown_references(expr: str) -> list[str]:
    problems = []
    series = exported()
    for name, labels in selectors(expr):
        if name not in series:
            problems.append(f"{name} is not exported")
            continue
        missing = labels - series[name] - TARGET_LABELS
        if missing:
            problems.append(f"{name} has no label(s) {sorted(missing)}")
    return problems


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_the_exported_metrics_include_the_ones_the_seeds_name() -> None:
    series = exported()
    seeds = [
        "publishing_requests_total",
        "publishing_duration_seconds_bucket",
        "validation_errors_total",
        "policy_violations_total",
        "integration_failures_total",
        "marketplace_requests_total",
        "marketplace_request_duration_seconds_bucket",
        "marketplace_gateway_requests_total",
        "marketplace_gateway_request_duration_seconds_bucket",
        "marketplace_gateway_errors_total",
        "marketplace_gateway_quota_rejections_total",
    ]
    assert [name for name in seeds if name not in series] == []
    assert series["marketplace_gateway_errors_total"] == {"route", "code"}


def test_the_rule_file_has_the_structure_prometheus_loads() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names)), "group names must be unique"
    alerts = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule
            assert isinstance(rule.get("alert"), str) and rule["alert"].isidentifier(), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts)), "alert names must be unique"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_rule_parses_and_names_exported_metrics(rule: dict[str, Any]) -> None:
    promql_parser.parse(rule["expr"])
    assert unknown_references(rule["expr"]) == []


def test_the_rules_cover_what_operators_watch() -> None:
    expressions = " ".join(rule["expr"] for rule in rules())
    for metric in (
        "publishing_requests_total",  # publish rate and failures
        "publishing_phase_results_total",  # failures by phase
        "marketplace_gateway_requests_total",  # gateway errors
        "marketplace_gateway_request_duration_seconds_bucket",  # gateway latency
        "marketplace_gateway_quota_rejections_total",  # quota rejections
    ):
        assert metric in expressions


def test_the_dashboard_is_grafana_dashboard_json_on_the_datasource_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


@pytest.mark.parametrize(("title", "expr"), dashboard_targets(), ids=[t for t, _ in dashboard_targets()])
def test_every_dashboard_query_parses_and_names_exported_metrics(title: str, expr: str) -> None:
    promql_parser.parse(grafana_expr(expr))
    assert unknown_references(grafana_expr(expr)) == []


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(marketplace_gateway_requests_total[5m]", "unclosed"),
        ("sum(rate(marketplace_gateway_request_total[5m]))", "marketplace_gateway_request_total is not exported"),
        ('sum by (provider) (rate(marketplace_gateway_errors_total{code="x"}[5m]))', "no label(s) ['provider']"),
    ],
)
def test_the_checks_catch_a_broken_expression(expr: str, problem: str) -> None:
    if problem == "unclosed":
        with pytest.raises(ValueError, match=problem):
            promql_parser.parse(expr)
        return
    assert any(problem in found for found in unknown_references(expr)), unknown_references(expr)


def test_the_kustomization_renders_the_two_config_maps() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (tests/deploy/test_manifests.py requires it in CI)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(OBSERVABILITY)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    maps = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(rendered) if doc}
    dashboard = maps["grafana-dashboards-marketplace"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["marketplace.json"]) == json.loads(DASHBOARD.read_text())
    assert yaml.safe_load(maps["prometheus-rules-marketplace"]["data"]["alerts.yaml"]) == yaml.safe_load(
        RULES.read_text()
    )


def test_a_registry_of_its_own_per_component() -> None:
    assert isinstance(gateway_metrics.registry(), CollectorRegistry)
