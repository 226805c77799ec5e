"""Waking jobs when their zone's reading changes, and letting a wave of starts go first.

kopf's timers cannot be woken early, so each job's reconcile handler waits itself: for its
interval, or until its zone's bell rings, whichever comes first. The provider cache rings a
zone's bell when a fetch brings a reading that differs from the one before (a drop, a rise,
a new hour). Every job of that zone then reconciles at once on the cached reading, without
another provider request, instead of one by one over the next interval.

A drop can make hundreds of jobs start together. Each start is one urgent write (the Job)
and some bookkeeping (status, the log ConfigMap, an Event). The StartWave lets every job
woken by the bell create its Job before any of them does its bookkeeping, so the last Job
is not queued behind everybody's status and log writes; and the handler threads
(UrgentFirstExecutor) take any job's reading and deciding before log writes queued earlier,
so a zone whose reading changes a few seconds after another's is neither seen nor started
late because of the first wave's bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

# How long a started job's bookkeeping may wait for the rest of its wave: a bound, so that a
# stuck start (an apiserver timeout) never holds everyone's status back for long.
MAX_WAVE_WAIT_SECONDS = 30.0
LOGGER = logging.getLogger(__name__)


# How often the jobs waiting on a bell are checked for their stop flag (the object deleted,
# the operator exiting): one sweep for all of them, where a task per job waiting on its flag
# would cost ~5 KB each (kopf's ``stopped.wait()`` is three tasks deep).
STOP_CHECK_SECONDS = 0.5


class ZoneBells:
    """One bell per zone: ``ring`` from any thread, ``wait`` in the event loop.

    A waiting job is one future (and one timer handle for its timeout): 1,000 waiting jobs
    take ~1.5 MB with their own coroutines, against ~6 MB with a task per bell and per stop
    flag (bench/waiting.py)."""

    def __init__(self) -> None:
        self._waiting: dict[str, dict[asyncio.Future[bool], Any]] = {}  # zone: {woke: stopped}
        self._rung: dict[str, int] = {}  # rings so far, per zone
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_check: asyncio.TimerHandle | None = None

    def rung(self, zone: str) -> int:
        """How often the zone's bell has rung: a job notes it when it starts reconciling,
        and does not wait at all if it rang meanwhile (it was busy, not listening)."""
        return self._rung.get(zone, 0)

    async def wait(self, zone: str, timeout: float, stopped: Any = None, seen: int = 0) -> bool:
        """True when the zone's bell rang within ``timeout`` seconds, or since the job saw
        ``seen`` rings; False on timeout or when ``stopped`` (kopf's stop flag: the object is
        deleted, the operator exits), which is seen within ``STOP_CHECK_SECONDS``."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): the old one's stop check is gone
            self._loop, self._stop_check = loop, None
        if self.rung(zone) > seen:
            return True
        if timeout <= 0:
            return False
        woke: asyncio.Future[bool] = loop.create_future()
        waiting = self._waiting.setdefault(zone, {})
        waiting[woke] = stopped
        timer = loop.call_later(timeout, _settle, woke, False)
        if stopped is not None and self._stop_check is None:
            self._stop_check = loop.call_later(STOP_CHECK_SECONDS, self._check_stops)
        try:
            rang = await woke
        finally:
            timer.cancel()
            waiting.pop(woke, None)
        return rang and not (stopped is not None and stopped)

    def ring(self, zone: str) -> None:
        """Wake every job waiting on ``zone``. Thread-safe; a no-op before any wait."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(self._ring, zone)

    def _ring(self, zone: str) -> None:
        self._rung[zone] = self._rung.get(zone, 0) + 1
        LOGGER.info(f"zone {zone}: a new reading; waking its jobs")
        for woke in self._waiting.pop(zone, {}):  # later waiters wait for the next ring
            _settle(woke, True)

    def _check_stops(self) -> None:
        self._stop_check = None
        watched = False
        for waiting in self._waiting.values():
            for woke, stopped in waiting.items():
                if stopped is None:
                    continue
                if stopped:
                    _settle(woke, False)
                else:
                    watched = True
        if watched and self._loop is not None:
            self._stop_check = self._loop.call_later(STOP_CHECK_SECONDS, self._check_stops)


def _settle(woke: asyncio.Future[bool], rang: bool) -> None:
    if not woke.done():
        woke.set_result(rang)


class StartWave:
    """Counts the reconciles a bell woke that are still deciding (or creating their Job);
    ``settled`` waits, in the event loop, until there are none (at most ``max_wait``)."""

    def __init__(self, max_wait: float = MAX_WAVE_WAIT_SECONDS) -> None:
        self.max_wait = max_wait
        self.deciding = 0
        self._quiet: asyncio.Event | None = None

    @contextlib.contextmanager
    def member(self, woken: bool) -> Iterator[None]:
        if not woken:
            yield
            return
        self.deciding += 1
        try:
            yield
        finally:
            self.deciding -= 1
            if self.deciding == 0 and self._quiet is not None:
                self._quiet.set()
                self._quiet = None

    async def settled(self) -> None:
        if self.deciding == 0:
            return
        if self._quiet is None:
            self._quiet = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), self.max_wait)


class UrgentFirstExecutor:
    """``workers`` threads that run urgent work before other work queued earlier (a plain
    ThreadPoolExecutor is first come, first served). Threads start on demand, as
    ThreadPoolExecutor's do, and are daemons: a blocked API call never holds up an exit."""

    def __init__(self, workers: int, name: str = "tick") -> None:
        self.workers = workers
        self.name = name
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], Any], Future]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()  # first come, first served within a priority
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, call: Callable[[], Any], urgent: bool = False) -> Future:
        future: Future = Future()
        self._queue.put((0 if urgent else 1, next(self._order), call, future))
        if not self._idle.acquire(blocking=False):  # no thread is idle: start one if allowed
            with self._lock:
                if len(self._threads) < self.workers:
                    name = f"{self.name}-{len(self._threads)}"
                    thread = threading.Thread(target=self._work, name=name, daemon=True)
                    self._threads.append(thread)
                    thread.start()
        return future

    def _work(self) -> None:
        while True:
            _, _, call, future = self._queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # to the awaiting handler, as executors do
                    future.set_exception(exc)
            del call, future
            self._idle.release()
