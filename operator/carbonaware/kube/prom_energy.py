"""Measured energy of a Job's pods from a Prometheus that scrapes Kepler and/or DCGM.

The operator's settings name the Prometheus (``CARBONAWARE_PROMETHEUS_URL``, a bearer token
from a Secret as ``CARBONAWARE_PROMETHEUS_TOKEN``) and one PromQL template per source
(``CARBONAWARE_KEPLER_QUERY``, ``CARBONAWARE_DCGM_QUERY``). A template returns joules per pod
over a range: ``$namespace``, ``$pods`` (a regex of the Job's pod names; PromQL anchors
it) and ``$range`` (the segment's length in ms, e.g. ``93250ms``) are filled in, and it is
evaluated at the end of each run segment, so a suspended-and-resumed Job adds up its
segments and nothing between them. The result's one label names the pod.

- Kepler exports ``kepler_container_joules_total`` (joules, labels ``container_namespace``,
  ``pod_name``; Kepler >= 0.7).
- NVIDIA's dcgm-exporter exports ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` in millijoules
  since boot, per GPU, with ``namespace`` and ``pod`` of the pod holding the GPU when its
  Kubernetes mapping is on; the default template divides by 1000.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from string import Template
from typing import Any

import requests

from carbonaware.core.pod_energy import SourceFigure, prometheus_figure
from carbonaware.providers.http import make_session

KEPLER_QUERY = (
    "sum by (pod_name) (increase(kepler_container_joules_total"
    '{container_namespace="$namespace",pod_name=~"$pods"}[$range]))'
)
DCGM_QUERY = (
    "sum by (pod) (increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
    '{namespace="$namespace",pod=~"$pods"}[$range])) / 1000'
)
TIMEOUT_S = 10.0


class PrometheusError(RuntimeError):
    """Prometheus could not answer; the message names the source, never the token."""


def render_query(template: str, namespace: str, pods: Sequence[str], seconds: float) -> str:
    """The template with the Job's namespace, pod names (as an anchored regex) and range."""
    regex = "|".join(re.escape(p) for p in sorted(set(pods)))
    return Template(template).safe_substitute(
        namespace=namespace,
        pods=regex.replace("\\", "\\\\"),  # a PromQL string literal escapes its backslashes
        range=f"{max(1, math.floor(seconds * 1000))}ms",  # never into the time before it
    )


def parse_vector(doc: Mapping[str, Any]) -> dict[str, float]:
    """Joules per pod from an instant query's answer (``resultType: vector``); each sample's
    one label value is the pod's name."""
    data = doc.get("data") if isinstance(doc, Mapping) else None
    if doc.get("status") != "success" or not isinstance(data, Mapping):
        raise PrometheusError(f"Prometheus answered {doc.get('error') or 'no data'}")
    joules: dict[str, float] = {}
    for sample in data.get("result") or []:
        labels = sample.get("metric") or {}
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        pod = next(iter(labels.values()), "") if len(labels) == 1 else ""
        if pod and math.isfinite(value) and value >= 0:
            joules[pod] = joules.get(pod, 0.0) + value
    return joules


class PrometheusEnergy:
    """Asks one Prometheus for the Job's joules, per source, over its run segments."""

    def __init__(self, url: str, token: str = "", queries: Mapping[str, str] | None = None):
        self.url = url.rstrip("/")
        self.queries = dict(queries or {"kepler": KEPLER_QUERY, "dcgm": DCGM_QUERY})
        self.session: requests.Session = make_session(retries=2)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def query(self, expr: str, at: datetime) -> dict[str, float]:
        try:
            response = self.session.get(
                f"{self.url}/api/v1/query",
                params={"query": expr, "time": f"{at.timestamp():.3f}"},
                timeout=TIMEOUT_S,
            )
            doc = response.json()
        except (requests.RequestException, ValueError) as exc:
            why = type(exc).__name__
            raise PrometheusError(f"Prometheus at {self.url} unreachable: {why}") from None
        if response.status_code != 200 and doc.get("status") != "error":
            raise PrometheusError(f"Prometheus at {self.url} answered HTTP {response.status_code}")
        return parse_vector(doc)

    def figures(
        self,
        namespace: str,
        pods: Sequence[str],
        segments: Sequence[tuple[datetime, datetime]],
    ) -> list[SourceFigure]:
        """One measured figure per source that had series for the Job's pods."""
        found = []
        for source, template in self.queries.items():
            per_pod: dict[str, float] = {}
            for start, end in segments:
                expr = render_query(template, namespace, pods, (end - start).total_seconds())
                for pod, joules in self.query(expr, end).items():
                    per_pod[pod] = per_pod.get(pod, 0.0) + joules
            figure = prometheus_figure(source, per_pod)
            if figure is not None:
                found.append(figure)
        return found
