"""Memory of jobs waiting for their zone's bell, against a task per bell and per stop flag.

    .venv/bin/python bench/waiting.py --jobs 1000

Each job waits as the operator's timer does (kube/handlers.py ``_wait_turn``): on
``ZoneBells.wait`` with kopf's own stop flag. The reference waits as the operator did until
2026-12-07: one task on the bell's event and one on ``stopped.wait()`` (three tasks deep in
kopf), raced with ``asyncio.wait``. Memory is what tracemalloc counts while every job waits
(the jobs' own coroutines included, in both), then half the jobs are stopped and the bell
rings, and both must end every wait with the same answers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from carbonaware.kube.wakeups import ZoneBells
from kopf._cogs.aiokits.aioenums import FlagSetter  # what kopf hands a timer as ``stopped``


async def task_per_flag(event: asyncio.Event, timeout: float, stopped: Any) -> bool:
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return waits[0] in done and not stopped


async def measure(jobs: int, wait: Callable[[Any], Awaitable[bool]], ring: Callable[[], None]):
    stoppers = [FlagSetter() for _ in range(jobs)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    waits = [asyncio.ensure_future(wait(stopper.async_waiter)) for stopper in stoppers]
    await asyncio.sleep(0.1)
    gc.collect()
    waiting = tracemalloc.get_traced_memory()[0] - before
    tasks = len(asyncio.all_tasks()) - 1
    tracemalloc.stop()
    started = time.monotonic()
    for stopper in stoppers[: jobs // 2]:
        stopper.set()
    stopped = await asyncio.gather(*waits[: jobs // 2])
    stop_seconds = time.monotonic() - started
    ring()
    rung = await asyncio.gather(*waits[jobs // 2 :])
    assert not any(stopped) and all(rung), "a wait ended with the wrong answer"
    return waiting, tasks, stop_seconds


async def main(jobs: int) -> None:
    bells = ZoneBells()
    await bells.wait("GB", 0.001)  # binds the loop, as the first reconcile does

    async def ours(stopped: Any) -> bool:
        return await bells.wait("GB", 3600, stopped)

    event = asyncio.Event()

    async def reference(stopped: Any) -> bool:
        return await task_per_flag(event, 3600, stopped)

    rows = [
        ("ZoneBells.wait", *await measure(jobs, ours, lambda: bells.ring("GB"))),
        ("task per flag", *await measure(jobs, reference, event.set)),
    ]
    print(f"{jobs} jobs waiting     traced KiB  bytes/job  tasks  all stops seen in")
    for name, waiting, tasks, stop_seconds in rows:
        print(f"{name:<20} {waiting / 1024:>10.0f} {waiting / jobs:>10.0f} {tasks:>6}"
              f" {stop_seconds:>10.2f} s")  # fmt: skip
    print(f"ratio (ours / reference): {rows[0][1] / rows[1][1]:.2f}x memory")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    asyncio.run(main(parser.parse_args().jobs))
