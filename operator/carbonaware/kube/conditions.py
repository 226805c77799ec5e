"""Kubernetes-style status conditions and the status merge patch (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from carbonaware.kube.builders import iso


def set_condition(
    conditions: list[dict[str, Any]] | tuple[dict[str, Any], ...],
    *,
    type: str,
    status: bool | Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Conditions with ``type`` set; lastTransitionTime moves only when the status flips."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    result = []
    found = False
    for condition in conditions:
        if condition.get("type") != type:
            result.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != status_text
        result.append(
            {
                "type": type,
                "status": status_text,
                "reason": reason,
                "message": message,
                "lastTransitionTime": iso(now)
                if changed
                else condition.get("lastTransitionTime", iso(now)),
                "observedGeneration": generation,
            }
        )
    if not found:
        result.append(
            {
                "type": type,
                "status": status_text,
                "reason": reason,
                "message": message,
                "lastTransitionTime": iso(now),
                "observedGeneration": generation,
            }
        )
    return [{k: v for k, v in c.items() if v is not None} for c in result]


def get_condition(conditions: list[dict[str, Any]] | None, type: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type), None)


def build_status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict | None:
    """The merge patch that turns ``current`` status into ``desired``; None if nothing changed.

    Only top-level keys that differ are sent, so a poll that learnt nothing new writes nothing.
    """
    current = current or {}
    patch = {key: value for key, value in desired.items() if current.get(key) != value}
    return patch or None
