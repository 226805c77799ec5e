"""The final JSON line: what the scheduler reads from stdout and the pod's termination message."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from carbonaware.core.workload_report import FIELDS

TERMINATION_LOG = Path("/dev/termination-log")
TERMINATION_LOG_LIMIT = 4096  # Kubernetes keeps at most 4 KiB of a termination message

# Exit codes (documented in trainer/README.md).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # bad flags, missing data, unusable checkpoint, device not available
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM/SIGINT after writing a checkpoint

# Every final line has these keys (null when unknown, e.g. accuracy after a failed start):
# the contract its readers parse, defined once in carbonaware/core/workload_report.py.
REQUIRED_FIELDS = FIELDS
# Dropped, in this order, if the line would not fit into the termination message.
_OPTIONAL_BULK = ("energy_notes", "notes", "error")


def to_json_line(result: dict[str, Any]) -> str:
    """Compact JSON that fits the termination message limit."""
    payload = dict(result)
    line = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    for key in _OPTIONAL_BULK:
        if len(line.encode()) <= TERMINATION_LOG_LIMIT:
            break
        payload.pop(key, None)
        line = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return line


def write_termination_log(line: str, path: Path = TERMINATION_LOG) -> None:
    """Kubernetes mounts /dev/termination-log in every container; elsewhere it is absent."""
    if not path.exists():
        return
    with contextlib.suppress(OSError):  # read-only or not ours: stdout still has the line
        path.write_text(line[:TERMINATION_LOG_LIMIT])
