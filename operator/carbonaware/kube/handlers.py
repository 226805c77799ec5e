"""kopf registration: one timer per CarbonAwareJob runs the reconcile pass (kube/reconcile.py)
once per poll floor, or as soon as its zone's reading changes (kube/wakeups.py), and a watch
handler keeps the jobs-by-phase metric. main.py configures kopf and calls :func:`register`.

Where the rest lives: kube/api.py (the Kubernetes API), kube/sources.py (providers and their
credentials), kube/runtime.py (shared state, per-job memory), kube/status.py (status pieces),
kube/reconcile.py (one reconcile), kube/builders.py (every object, pure).
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from carbonaware.kube import metrics
from carbonaware.kube.api import KubeApi, api_unavailable
from carbonaware.kube.builders import GROUP, PLURAL, VERSION
from carbonaware.kube.models import TERMINAL_PHASES
from carbonaware.kube.reconcile import Tick
from carbonaware.kube.runtime import JobMemory, Runtime

__all__ = ["KubeApi", "Runtime", "register"]

# kopf's pause between two runs of the reconcile handler, which does its own waiting.
TIMER_SPIN_SECONDS = 0.05
READ_OWN_WRITES_POLL_SECONDS = 0.05


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register the handlers on ``registry`` (main.py calls this; tests may too)."""
    interval = runtime.settings.poll_floor.total_seconds()

    def unfinished(status: Any, **_: Any) -> bool:
        return (status or {}).get("phase") not in TERMINAL_PHASES

    # The timer only keeps the handler going: the handler waits itself, for the rest of the
    # interval or for its zone's bell (kube/wakeups.py), which kopf's timers cannot do.
    # backoff: after an unexpected error (e.g. the apiserver is down) retry at the same pace.
    # when: a finished job has nothing left to do, so its timer stops (1,000 done jobs cost
    # nothing).
    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=TIMER_SPIN_SECONDS,
        backoff=interval,
        when=unfinished,
        registry=registry,
        id="reconcile",
    )
    async def reconcile(
        body: Any, memo: Any, patch: Any, logger: Any, stopped: Any, **_: Any
    ) -> None:
        memory = memo.get("job")
        if memory is None:
            memory = memo["job"] = JobMemory()
        woken = await _wait_turn(runtime, memory, body, interval, stopped)
        if stopped:
            return
        if woken:
            memory.next_poll = 0.0  # read the zone's new reading now (from the cache)
        tick = Tick(runtime, memory, body, logger)
        memory.seen_version = body["metadata"].get("resourceVersion")
        memory.rings_seen = runtime.bells.rung(_zone_of(body))
        try:
            with runtime.wave.member(woken):
                # Deciding is urgent, bookkeeping is not: a zone whose reading changes while
                # another zone's wave writes its logs is seen (and started) at once.
                status_patch = await runtime.in_thread(tick.run, urgent=True)
            if tick.started:
                await runtime.wave.settled()  # the wave's Jobs first, then the bookkeeping
            await runtime.in_thread(tick.finish)
        except Exception as exc:
            # The tick may have created the Job before it failed: look again next time.
            memory.adoption_checked = False
            why = api_unavailable(exc)
            if why is None:
                raise
            raise kopf.TemporaryError(
                f"the Kubernetes API is unavailable ({why}); retrying", delay=interval
            ) from None
        finally:
            memory.last_tick = asyncio.get_running_loop().time()
            tick.post_events()
        memory.patched = bool(status_patch)
        for key, value in (status_patch or {}).items():
            patch.status[key] = value

    # A watch-event handler (not on.delete): it needs no finalizer and writes nothing. Async:
    # it does no I/O, and kopf would otherwise start a thread pool of its own for it.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="track")
    async def track(type: str, uid: str, status: Any, **_: Any) -> None:
        """Jobs by phase for the metrics, from what the watch sees (restarts included)."""
        if type == "DELETED":
            metrics.set_phase(uid, None)  # its Job and log go with it (ownerReferences)
        else:
            metrics.set_phase(uid, (status or {}).get("phase") or "Pending")


def _zone_of(body: Any) -> str:
    return str((body.get("spec") or {}).get("zone") or "")


async def _wait_turn(
    runtime: Runtime, memory: JobMemory, body: Any, interval: float, stopped: Any
) -> bool:
    """Wait for this job's next reconcile: the rest of its interval, or less if its zone's
    bell rings (then True). The first reconcile does not wait."""
    if memory.last_tick is None:
        return False
    loop = asyncio.get_running_loop()
    woken = await runtime.bells.wait(
        _zone_of(body), memory.last_tick + interval - loop.time(), stopped, memory.rings_seen
    )
    # Read our own writes: status patched by the last reconcile must be in the body (the
    # watch brings it) before the next one decides on it; a bell can ring within ms.
    while (
        memory.patched
        and not stopped
        and body["metadata"].get("resourceVersion") == memory.seen_version
        and loop.time() < memory.last_tick + interval
    ):
        await asyncio.sleep(READ_OWN_WRITES_POLL_SECONDS)
    return woken
