"""The Grafana dashboard's PromQL with its variables filled in, for tests that parse it or run it on Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent / "dashboards" / "liveness.json"

VARIABLES = {"$camera": ".*", "$__rate_interval": "1m", "$__range": "1h"}
"""Dashboard variable -> what Grafana would send: every camera, a rate window of 4 scrapes at 15 s, and the
dashboard's default time range."""


def load(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def panel_queries(path: Path = DASHBOARD, variables: dict[str, str] = VARIABLES) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, with ``variables`` substituted.

    Longer variable names are replaced first, so ``$camera`` never clips ``$cameras``.
    """
    out = []
    for panel in load(path)["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(variables, key=len, reverse=True):
                expr = expr.replace(name, variables[name])
            out.append((panel["title"], expr))
    return out
