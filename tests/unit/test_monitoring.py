"""The monitoring stack of docker/: Prometheus, its alert rules, and Grafana's dashboard.

Docker does not run here, so these read the files: every metric the alert rules and
the dashboard use is one prodinf serves (in a real scrape of the portal, after a job
ran) and documents (docs/metrics.rst); Prometheus scrapes the services and ports the
compose file runs; every file the compose file mounts exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.embedded import run

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
METRIC = re.compile(r"\bprodinf_[a-z_]+\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
RABBITMQ_ONLY = {"prodinf_queue_consumers"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    return loaded


def used_metrics() -> dict[str, set[str]]:
    """Metric name -> the files that use it (alert rules and the dashboard)."""
    used: dict[str, set[str]] = {}
    alerts = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            for name in METRIC.findall(rule["expr"]):
                used.setdefault(name, set()).add("alerts.yml")
    board = json.loads((DOCKER / "grafana" / "dashboards" / "prodinf.json").read_text())
    for panel in board["panels"]:
        for target in panel["targets"]:
            for name in METRIC.findall(target["expr"]):
                used.setdefault(name, set()).add("prodinf.json")
    return used


def family_of(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_metric_the_rules_and_the_dashboard_use_exists(app: Flask, site: Any) -> None:
    """Given a scrape of the portal after a job ran, then every metric an alert rule or
    a dashboard panel uses is served and documented in docs/metrics.rst."""
    run(app, "http_get", {"url": f"{site.base}/ok"})
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200
    served = {f.name for f in text_string_to_metric_families(answer.get_data(as_text=True))}
    documented = (ROOT / "docs" / "metrics.rst").read_text()
    used = used_metrics()
    assert len(used) >= 10, used  # the rules and the dashboard say something
    # the embedded broker knows no consumers: that one is served on RabbitMQ only
    # (tests/integration/test_metrics.py scrapes it there)
    unknown = {
        n: sorted(w)
        for n, w in used.items()
        if family_of(n) not in served and family_of(n) not in RABBITMQ_ONLY
    }
    assert not unknown, f"used but not served: {unknown}"
    undocumented = {n: sorted(w) for n, w in used.items() if family_of(n) not in documented}
    assert not undocumented, f"used but not in docs/metrics.rst: {undocumented}"


def test_the_alert_rules_cover_workers_stuck_queues_and_failures() -> None:
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert {"ProdinfNoWorker", "ProdinfQueueStuck", "ProdinfFailureRate"} <= set(rules)
    assert "prodinf_workers_alive" in rules["ProdinfNoWorker"]["expr"]
    assert "prodinf_oldest_queued_job_age_seconds" in rules["ProdinfQueueStuck"]["expr"]
    assert 'status="failed"' in rules["ProdinfFailureRate"]["expr"]
    for name, rule in rules.items():
        assert rule["annotations"]["summary"], name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name


def test_prometheus_scrapes_the_portal_and_each_worker_where_they_serve() -> None:
    """Given the compose file, then Prometheus scrapes the portal on the port gunicorn
    binds, with a token (the portal asks for one), and each worker service on the port
    its settings give (PRODINF_METRICS_PORT, on every interface)."""
    services = compose()["services"]
    env = compose()["x-prodinf-env"]
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    portal = jobs["prodinf-portal"]
    assert portal["static_configs"][0]["targets"] == ["portal:5000"]
    assert "-b 0.0.0.0:5000" in services["portal"]["command"]
    assert portal["authorization"]["credentials_file"].startswith("/etc/prometheus/secrets/")

    workers = sorted(name for name in services if name.startswith("worker-"))
    port = env["PRODINF_METRICS_PORT"]
    assert env["PRODINF_METRICS_HOST"] == "0.0.0.0"
    targets = jobs["prodinf-workers"]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{name}:{port}" for name in workers)
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]


def test_what_the_monitoring_services_mount_exists() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which is missing"
    board = json.loads((DOCKER / "grafana" / "dashboards" / "prodinf.json").read_text())
    assert board["uid"] == "prodinf" and board["panels"]
    source = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    uids = {
        t["datasource"]["uid"] if "datasource" in t else p["datasource"]["uid"]
        for p in board["panels"]
        for t in p["targets"]
    }
    assert uids == {source["datasources"][0]["uid"]}
