"""Benchmark: appending to the bounded intensity log stays cheap however long a job waits.

Compares IntensityLog.append (rows formatted once, size tracked, compaction amortised) with the
naive way to keep a log under a byte budget — re-serialise the whole CSV after every append to
check its size — at the same number of appends, then runs 100,000 appends at the default
512 KiB budget. Run: .venv/bin/python bench/intensity_log.py
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from carbonaware.core.intensity_log import DEFAULT_BUDGET_BYTES, IntensityLog
from carbonaware.core.model import Reading

T0 = datetime(2022, 1, 1, tzinfo=UTC)


def readings(count: int, step_s: int = 300):
    return [
        Reading("DE", T0 + timedelta(seconds=i * step_s), 200.0 + (i % 288), provider="replay")
        for i in range(count)
    ]


def bounded(items) -> tuple[float, int]:
    log = IntensityLog({"zone": "DE"})
    start = time.perf_counter()
    for reading in items:
        log.append(reading)
    elapsed = time.perf_counter() - start
    return elapsed, len(log.to_csv().encode())


def naive(items) -> float:
    """Re-serialise after every append (what a size check without bookkeeping costs)."""
    log = IntensityLog({"zone": "DE"}, budget_bytes=1 << 40)  # never compacts: pure cost
    start = time.perf_counter()
    for reading in items:
        log.append(reading)
        _ = len(log.to_csv().encode()) <= DEFAULT_BUDGET_BYTES
    return time.perf_counter() - start


def main() -> None:
    print(f"{'appends':>8} {'bounded µs/append':>18} {'naive µs/append':>16} {'ratio':>7}")
    for count in (2_000, 8_000):
        items = readings(count)
        fast, _ = bounded(items)
        slow = naive(items)
        print(
            f"{count:>8} {fast / count * 1e6:>18.1f} {slow / count * 1e6:>16.1f} "
            f"{slow / fast:>6.0f}×"
        )
    items = readings(100_000)
    elapsed, size = bounded(items)
    print(
        f"100,000 appends (5-min readings, ~347 days) at the default budget: {elapsed:.2f} s "
        f"({elapsed / 100_000 * 1e6:.1f} µs/append), final CSV {size / 1024:.0f} KiB "
        f"of {DEFAULT_BUDGET_BYTES / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
