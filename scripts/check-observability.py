#!/usr/bin/env python3
"""Checks the hub chart's dashboard and alert rules as rendered (scripts/check-charts calls it
with a render that enables both): the dashboard is valid JSON with unique panel ids and a query
on every panel, every rule has a name, an expression and a severity, and every gitfleet metric
they read is one docs/configuration.md documents. (e2e/tests/metrics.rs checks that the hub
really exposes each of them.)"""
import json
import re
import sys

import yaml

SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_info")


def family(name):
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] + "_" != "gitfleet_":
            return name[: -len(suffix)]
    return name


def main(rendered, docs):
    documented = {family(m) for m in re.findall(r"`(gitfleet_[a-z_]+)`", open(docs).read())}
    docs_ = [d for d in yaml.safe_load_all(open(rendered)) if d]
    problems = []
    used = set()
    dashboards = [
        d for d in docs_
        if d.get("kind") == "ConfigMap" and any(k.endswith(".json") for k in d.get("data", {}))
    ]
    rules = [d for d in docs_ if d.get("kind") == "PrometheusRule"]
    if not dashboards:
        problems.append("no dashboard ConfigMap rendered")
    if not rules:
        problems.append("no PrometheusRule rendered")
    for cm in dashboards:
        for key, text in cm["data"].items():
            try:
                dash = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append(f"{key}: not JSON: {e}")
                continue
            ids = [p["id"] for p in dash.get("panels", [])]
            if len(ids) != len(set(ids)):
                problems.append(f"{key}: panel ids repeat")
            for p in dash.get("panels", []):
                if p.get("type") == "row":
                    continue
                exprs = [t.get("expr", "") for t in p.get("targets", [])]
                if not exprs or not all(exprs):
                    problems.append(f"{key}: panel {p.get('title')!r} has no query")
                for e in exprs:
                    used.update(re.findall(r"gitfleet_[a-z_]+", e))
            for v in dash.get("templating", {}).get("list", []):
                q = v.get("query")
                if isinstance(q, dict):
                    used.update(re.findall(r"gitfleet_[a-z_]+", q.get("query", "")))
    for r in rules:
        for group in r["spec"]["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                if not name or not rule.get("expr"):
                    problems.append(f"rule {rule}: needs alert (or record) and expr")
                    continue
                if rule.get("alert") and "severity" not in rule.get("labels", {}):
                    problems.append(f"alert {name}: no severity label")
                used.update(re.findall(r"gitfleet_[a-z_]+", str(rule["expr"])))
    for metric in sorted(used):
        if family(metric) not in documented:
            problems.append(f"{metric}: read by the dashboard or a rule, but not in {docs}")
    for p in problems:
        print(f"observability: {p}", file=sys.stderr)
    print(f"observability: {len(used)} metrics read, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
