"""A job's intensity log ConfigMap: read once, written when it changed (merged on conflict),
with the plot once the job finished. Part of the reconcile pass (kube/reconcile.py)."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from carbonaware.core.intensity_log import IntensityLog
from carbonaware.kube import builders
from carbonaware.kube.models import (
    CarbonAwareJobSpec,
)

# Writes of the log ConfigMap per tick when another writer keeps changing it; then the tick
# fails (kopf retries it next interval) rather than end without the log written.
LOG_WRITE_ATTEMPTS = 5
LOGGER = logging.getLogger(__name__)


class LogStore:
    """Tick's log ConfigMap steps (uses its rt, mem, name, namespace, uid, desired, logger)."""

    # -- the log ConfigMap ----------------------------------------------------------------------
    def _load_log(self, spec: CarbonAwareJobSpec) -> IntensityLog:
        if self.mem.log is not None:
            return self.mem.log
        budget = self.rt.settings.log_budget_bytes
        self.mem.log = self._read_stored_log(budget) or IntensityLog(budget_bytes=budget)
        return self.mem.log

    def _read_stored_log(self, budget_bytes: int) -> IntensityLog | None:
        """The log ConfigMap's copy (None if absent, empty or damaged); records its version
        and text as what this tick last saw stored."""
        stored = self.rt.kube.read_configmap(self.namespace, builders.log_configmap_name(self.name))
        text = ((stored or {}).get("data") or {}).get(builders.LOG_CSV_KEY) or ""
        metadata = (stored or {}).get("metadata") or {}
        self.mem.log_version = metadata.get("resourceVersion")
        self.mem.log_stored_metadata = {
            key: metadata[key] for key in ("labels", "annotations") if metadata.get(key)
        }
        self.mem.log_written = text
        if not text:
            return None
        try:
            return IntensityLog.from_csv(text, budget_bytes=budget_bytes)
        except ValueError as exc:  # damaged by hand: ours replaces it, say so
            self.logger.warning(f"log ConfigMap unreadable, replacing it: {exc}")
            return None

    def _save_log(self, log: IntensityLog, plot: bytes | None = None) -> None:
        """Write the log ConfigMap if it changed, at the version last read or written."""
        spec = self.mem.spec
        if spec is not None:
            log.update(builders.build_log_metadata(spec, self.desired))
        for _ in range(LOG_WRITE_ATTEMPTS):
            text = log.to_csv()
            if text == self.mem.log_written and plot is None:
                return
            body = builders.build_log_configmap(
                name=self.name,
                namespace=self.namespace,
                uid=self.uid,
                csv_text=text,
                plot_png=plot,
                stored_metadata=self.mem.log_stored_metadata,
            )
            try:
                self.mem.log_version = self.rt.kube.write_configmap(body, self.mem.log_version)
                self.mem.log_written = text
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            # Someone else wrote it since (a person, a second replica): merge, write again.
            self._merge_stored_log(log)
        raise kopf.TemporaryError(
            f"the log ConfigMap changed under each of {LOG_WRITE_ATTEMPTS} writes; retrying",
            delay=self.rt.settings.poll_floor.total_seconds(),
        )

    def _merge_stored_log(self, log: IntensityLog) -> None:
        """Take the stored copy's version, and into ``log`` its readings that ours lacks."""
        before = len(log.readings)
        stored = self._read_stored_log(log.budget_bytes)  # None when deleted: created again
        if stored is not None:
            log.absorb(stored)
        name = builders.log_configmap_name(self.name)
        LOGGER.info(
            f"log ConfigMap {self.namespace}/{name} changed since we read it (HTTP 409): "
            f"merged {len(log.readings) - before} reading(s) from the stored copy, writing again"
        )


def render_plot_png(log: IntensityLog, logger: Any) -> bytes | None:
    from carbonaware.plotting import render_plot  # matplotlib: import only when needed

    try:
        return render_plot(log, None)
    except Exception as exc:  # the plot is a nicety: never lose the accounting over it
        logger.warning(f"could not render the plot: {exc}")
        return None
