"""The Grafana dashboard only asks for series the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ghostream import monitoring

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "ghostream-dashboard.json"
SUFFIXES = {"counter": ["_total"], "gauge": [""], "info": ["_info"], "summary": ["_sum", "_count"]}


def exported_names() -> set[str]:
    names = set()
    for family in monitoring.REGISTRY.collect():
        for suffix in SUFFIXES.get(family.type, [""]):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


def queried_names() -> set[str]:
    exprs = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return {
        name for expr in exprs for name in re.findall(r"\b((?:ghostream|process)_[a-z0-9_]+)", expr)
    }


def test_every_queried_series_is_exported() -> None:
    queried = queried_names()
    assert {"ghostream_srt_rtt_seconds", "ghostream_srt_packets_lost_total"} <= queried
    assert queried - exported_names() == set()
