"""Waking a zone's jobs at once (kube/wakeups.py), in a real event loop with real threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from carbonaware.kube.wakeups import StartWave, UrgentFirstExecutor, ZoneBells
from kopf._cogs.aiokits.aioenums import FlagSetter  # what kopf hands a timer as ``stopped``


class Stop:
    """kopf's stop flag as the handler sees it: truthy once set, ``await wait()``."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> Stop:
        await self.event.wait()
        return self


def test_a_ring_from_another_thread_wakes_every_waiter_of_that_zone_only():
    async def scenario() -> tuple[list[bool], list[bool], float]:
        bells = ZoneBells()
        waiters = [asyncio.ensure_future(bells.wait("GB", 10)) for _ in range(100)]
        others = [asyncio.ensure_future(bells.wait("FR", 0.5)) for _ in range(3)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        threading.Thread(target=bells.ring, args=("GB",)).start()  # as the cache does
        woken = await asyncio.gather(*waiters)
        elapsed = time.monotonic() - started
        return woken, await asyncio.gather(*others), elapsed

    woken, others, elapsed = asyncio.run(scenario())
    assert woken == [True] * 100 and elapsed < 1
    assert others == [False] * 3  # timed out: another zone's bell


def test_a_ring_while_a_job_was_busy_is_not_missed():
    async def scenario() -> tuple[bool, float]:
        bells = ZoneBells()
        await bells.wait("GB", 0.01)  # binds the loop
        seen = bells.rung("GB")  # the job starts reconciling...
        bells.ring("GB")  # ...the zone's reading changes meanwhile...
        await asyncio.sleep(0.05)
        started = time.monotonic()
        woken = await bells.wait("GB", 5, seen=seen)  # ...so it does not wait at all
        return woken, time.monotonic() - started

    woken, elapsed = asyncio.run(scenario())
    assert woken and elapsed < 0.5


def test_waiting_ends_on_timeout_or_stop_without_a_ring():
    async def scenario() -> tuple[bool, bool, float]:
        bells, stop = ZoneBells(), Stop()
        timed_out = await bells.wait("GB", 0.1, stop)
        asyncio.get_running_loop().call_later(0.1, stop.event.set)
        started = time.monotonic()
        stopped = await bells.wait("GB", 10, stop)
        return timed_out, stopped, time.monotonic() - started

    timed_out, stopped, elapsed = asyncio.run(scenario())
    assert timed_out is False and stopped is False and elapsed < 2


def test_kopf_s_own_stop_flag_ends_a_wait_without_a_task_per_waiting_job():
    """kopf's stopper, as the timer gets it: deleting some jobs (or the operator exiting)
    ends their waits within a second while the rest wait on, until their zone's bell rings.
    Waiting costs no task per job: 1,000 waiting jobs must not cost the operator 5 MB."""

    async def scenario() -> tuple[list[bool], list[bool], float, int]:
        bells = ZoneBells()
        stoppers = [FlagSetter() for _ in range(200)]
        waits = [
            asyncio.ensure_future(bells.wait("GB", 3600, stopper.async_waiter))
            for stopper in stoppers
        ]
        await asyncio.sleep(0.05)
        tasks_while_waiting = len(asyncio.all_tasks()) - 1  # less this scenario's own
        started = time.monotonic()
        for stopper in stoppers[:100]:
            stopper.set()
        stopped = await asyncio.gather(*waits[:100])
        elapsed = time.monotonic() - started
        assert not any(wait.done() for wait in waits[100:])
        bells.ring("GB")
        return stopped, await asyncio.gather(*waits[100:]), elapsed, tasks_while_waiting

    stopped, rung, elapsed, tasks = asyncio.run(scenario())
    assert stopped == [False] * 100 and elapsed < 1.5
    assert rung == [True] * 100
    assert tasks == 200  # the waiting jobs themselves, nothing per bell or per stop flag


def test_a_wave_lets_every_member_decide_before_anyone_does_bookkeeping():
    async def scenario() -> list[str]:
        wave, order = StartWave(max_wait=10), []

        async def member(i: int) -> None:
            with wave.member(woken=True):
                await asyncio.sleep(0.01 * i)  # deciding, creating its Job
                order.append(f"job {i}")
            await wave.settled()
            order.append(f"bookkeeping {i}")

        await asyncio.gather(*(member(i) for i in range(5)))
        return order

    order = asyncio.run(scenario())
    assert order[:5] == [f"job {i}" for i in range(5)]
    assert sorted(order[5:]) == [f"bookkeeping {i}" for i in range(5)]


def test_a_stuck_member_holds_the_others_back_only_up_to_the_bound():
    async def scenario() -> float:
        wave = StartWave(max_wait=0.2)
        with wave.member(woken=True):
            started = time.monotonic()
            await wave.settled()  # itself still deciding: waits out the bound
            return time.monotonic() - started

    assert 0.15 < asyncio.run(scenario()) < 2


def test_urgent_work_overtakes_bookkeeping_queued_before_it():
    """A zone dropping while an earlier wave's log writes are queued: its Job creations go
    first."""
    executor, order, gate = UrgentFirstExecutor(workers=1), [], threading.Event()
    busy = executor.submit(gate.wait)  # the one thread is busy
    later = [executor.submit(lambda i=i: order.append(f"log {i}")) for i in range(3)]
    urgent = [executor.submit(lambda i=i: order.append(f"job {i}"), urgent=True) for i in range(2)]
    gate.set()
    for future in [busy, *later, *urgent]:
        future.result(timeout=5)
    assert order == ["job 0", "job 1", "log 0", "log 1", "log 2"]


def test_the_executor_keeps_to_its_threads_and_hands_back_errors():
    executor = UrgentFirstExecutor(workers=4)
    names = [executor.submit(lambda: (time.sleep(0.02), threading.current_thread().name)[1])
             for _ in range(40)]  # fmt: skip
    assert 1 <= len({f.result(timeout=10) for f in names}) <= 4

    def broken() -> None:
        raise ValueError("the apiserver said no")

    with pytest.raises(ValueError, match="said no"):
        executor.submit(broken).result(timeout=5)
