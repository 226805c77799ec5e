"""Scale: many CarbonAwareJobs across 10 zones on one operator, against the local control plane.

    .venv/bin/python bench/scale.py --jobs 1000      # needs `hack/local-cluster up`

The operator runs as a subprocess (``carbonaware-operator``, admin kubeconfig, one namespace).
Readings come from a loopback HTTP server speaking the Electricity Maps v3 API
(tests/plugins/faultkit.py), not the replay provider: the bench must choose the instant each
zone's intensity drops and count the provider requests per zone, which a replayed trace
(anchored at each job's creation) does not allow. Every job waits above its threshold
(300 > 100 g/kWh); then all ten zones drop to 50 at once, in one of two ways (``--drop``):

- ``new-reading`` (default): the server publishes a reading every ``--grid`` seconds (90),
  stamped at its period's start, as providers do (Electricity Maps hourly or finer, UK Carbon
  Intensity half-hourly, WattTime every 5 minutes), and the drop comes with a new reading, at
  a period start the bench draws at random. The operator phases its polls to that grid
  (CARBONAWARE_FOLLOW_GRID), still one per zone and interval.
- ``in-place``: readings stamped at the hour, and the hour's value changes in place at a
  random instant of the poll interval (as Electricity Maps refines an hour's estimate). No
  poll schedule can see that sooner than the next poll: up to one interval, half on average.

Jobs use a suspended jobTemplate
(``suspend: true``), so the Job controller creates no pods and the bench measures the
operator, not 1,000 pending pods.

Printed side by side:
- provider requests per poll interval while waiting (goal: one per zone, 10);
- time from the drop to each Job created (p50, p95, max) vs creating the same Jobs directly
  with the client, same concurrency (goal: <= 2x);
- time from the drop to every job's status saying Running (its bookkeeping, which the
  operator does after the wave's Jobs are created);
- operator peak RSS (VmHWM; goal <= 200 MB);
- apiserver requests/s while jobs wait (apiserver_request_total in the operator's window minus
  an idle window before it; the local apiserver is shared, so others' load is in both). With
  ``new-reading`` the window sits between two readings, and the requests each job makes for
  a new reading (its log and status record it) are counted apart.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "plugins"))

import urllib3  # noqa: E402
from faultkit import (  # noqa: E402
    FaultServer,
    OperatorProcess,
    create_em_secret,
    em_threshold_spec,
    install_crds,
    release,
)
from kubernetes import client, config, watch  # noqa: E402

GROUP, VERSION, PLURAL = "carbonaware.io", "v1alpha1", "carbonawarejobs"
ZONES = [f"BENCH-{i}" for i in range(10)]
QUIET_REQUESTS_PER_S = 3.0
TEMPLATE = {
    "spec": {
        "suspend": True,
        "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
        },
    }
}


def local_cluster() -> tuple[Path, str]:
    import subprocess

    env = subprocess.run([str(REPO / "hack" / "local-cluster"), "env"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in env.splitlines()
        if line.startswith("export ")
    )
    return Path(exports["KUBECONFIG"]), exports["PATH"].split(":", 1)[0] + "/kubectl"


def apiserver_requests(api: client.ApiClient) -> float:
    """Sum of apiserver_request_total over every label (the apiserver's own counter)."""
    response = api.call_api("GET", api.configuration.host + "/metrics")
    response.read()
    text = response.data.decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("apiserver_request_total{")
    )


def wait_quiet(api: client.ApiClient, limit_s: float = 200) -> float:
    """Wait (at most ``limit_s``) until the apiserver serves under QUIET_REQUESTS_PER_S;
    the last rate measured."""
    deadline = time.monotonic() + limit_s
    while True:
        before = apiserver_requests(api)
        time.sleep(5)
        rate = (apiserver_requests(api) - before) / 5
        if rate < QUIET_REQUESTS_PER_S or time.monotonic() > deadline:
            return rate


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=5.0, help="poll floor and cache TTL, s")
    parser.add_argument("--window", type=float, default=30.0, help="steady-state window, s")
    parser.add_argument("--workers", type=int, default=16, help="client concurrency")
    parser.add_argument("--drop", choices=("new-reading", "in-place"), default="new-reading",
                        help="how the intensity drops (see above)")  # fmt: skip
    parser.add_argument("--grid", type=int, default=90, help="new-reading: a reading every N s")
    args = parser.parse_args()
    if args.drop == "new-reading" and args.grid < max(60, 2 * args.poll):
        parser.error("--grid must be at least 60 s and two polls (its steady-state window "
                     "sits between two readings)")  # fmt: skip
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request

    kubeconfig, kubectl = local_cluster()
    api = config.new_client_from_config(config_file=str(kubeconfig))
    custom, core, batch = (
        client.CustomObjectsApi(api),
        client.CoreV1Api(api),
        client.BatchV1Api(api),
    )
    install_crds(kubectl, kubeconfig, REPO / "manifests")
    # An earlier run's cleanup (2,000 Jobs, 1,000 logs; the Job controller keeps posting
    # Events into the deleted namespaces for a while) loads the shared apiserver for a few
    # minutes: start once it is quiet, so that it counts in neither run.
    print(f"apiserver load at the start: {wait_quiet(api):.1f} requests/s")
    ns = f"bench-scale-{uuid.uuid4().hex[:6]}"
    direct_ns = ns + "-direct"
    for name in (ns, direct_ns):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    on_grid = args.drop == "new-reading"
    server = (
        FaultServer(stamp_every_s=args.grid) if on_grid else FaultServer(hourly_stamps=True)
    ).start()
    for zone in ZONES:
        server.set(zone, mode="ok", intensity=300)
    log = Path(tempfile.mkdtemp(prefix="bench-scale-")) / "operator.log"
    poll = f"{args.poll:g}s"
    operator = OperatorProcess(
        kubeconfig, (ns,), log,
        extra_env={"CARBONAWARE_POLL_FLOOR": poll, "CARBONAWARE_CACHE_TTL": poll},
    )  # fmt: skip
    create_em_secret(api, ns)
    pool = ThreadPoolExecutor(args.workers)
    try:
        names = [f"j{i:04d}" for i in range(args.jobs)]
        zone_of = {n: ZONES[i % len(ZONES)] for i, n in enumerate(names)}

        def create(name: str) -> None:
            every = poll if args.poll >= 1 else "1s"
            spec = em_threshold_spec(server, zone_of[name], every, {"jobTemplate": TEMPLATE})
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CarbonAwareJob",
                    "metadata": {"name": name}, "spec": spec}  # fmt: skip
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

        t0 = time.monotonic()
        list(pool.map(create, names))
        print(f"created {args.jobs} CarbonAwareJobs in {time.monotonic() - t0:.1f} s")

        idle_a = apiserver_requests(api)
        time.sleep(args.window / 2)
        idle_rate = (apiserver_requests(api) - idle_a) / (args.window / 2)

        started = time.monotonic()
        operator.start()
        print(f"operator healthy in {time.monotonic() - started:.1f} s")

        def phases() -> dict[str, int]:
            # The shared apiserver drops a request now and then under this load (its
            # 60 s timeout); the bench's own read is retried, it is not what is measured.
            for attempt in range(5):
                try:
                    items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
                    break
                except (urllib3.exceptions.HTTPError, client.ApiException) as exc:
                    if attempt == 4:
                        raise
                    print(f"listing jobs failed ({type(exc).__name__}); retrying")
                    time.sleep(2)
            items = items["items"]
            counts: dict[str, int] = {}
            for item in items:
                phase = (item.get("status") or {}).get("phase") or "none"
                counts[phase] = counts.get(phase, 0) + 1
            return counts

        while (counts := phases()).get("Waiting", 0) < args.jobs:
            if time.monotonic() - started > 600 or counts.get("Failed"):
                sys.exit(f"not all jobs waiting after 600 s: {phases()}")
            time.sleep(2)
        print(f"all {args.jobs} waiting {time.monotonic() - started:.1f} s after start")

        # Steady state: provider requests and apiserver load while everything waits. Two
        # intervals (10 s at least) first: the jobs admitted last still post their Waiting
        # Events (kopf posts them one by one) and fetch their history (one per zone).
        time.sleep(max(2 * args.poll, 10))
        per_reading = float("nan")
        if on_grid:
            # Each new reading is news to every job (its log and status record it): count
            # the operator's requests for one, from 2 s before its period starts to 40 s
            # after (1,000 jobs' bookkeeping takes 20-30 s here); then measure the steady
            # state between two readings.
            boundary = (int(time.time()) // args.grid + 1) * args.grid
            time.sleep(max(0.0, boundary - 2 - time.time()))
            before, t_before = apiserver_requests(api), time.monotonic()
            time.sleep(max(0.0, boundary + 40 - time.time()))
            spent = apiserver_requests(api) - before
            per_reading = (spent - idle_rate * (time.monotonic() - t_before)) / args.jobs
            args.window = min(args.window, args.grid - 50)
        # Each count over the time it really spans: scraping the apiserver's metrics takes
        # a second or so under this load, which would otherwise count as extra requests.
        busy_a, busy_t0 = apiserver_requests(api), time.monotonic()
        requests_a, requests_t0 = {z: server.count(z) for z in ZONES}, time.monotonic()
        time.sleep(args.window)
        requests_b, requests_t1 = {z: server.count(z) for z in ZONES}, time.monotonic()
        intervals = (requests_t1 - requests_t0) / args.poll
        per_zone = [(requests_b[z] - requests_a[z]) / intervals for z in ZONES]
        busy_rate = (apiserver_requests(api) - busy_a) / (time.monotonic() - busy_t0)

        # The drop: every zone to 50 g/kWh at once; watches stamp each Job's arrival and
        # each CarbonAwareJob's status turning Running (the bookkeeping after the Job).
        arrived: dict[str, float] = {}
        running: dict[str, float] = {}
        done = threading.Event()

        def follow(list_call, list_args: tuple, seen: dict[str, float], stamp) -> None:
            """Stamp objects from a watch until all are seen. A watch that breaks (under
            this load one did, and a third of the Jobs went unseen) goes on from its last
            resourceVersion."""
            version = None
            while len(seen) < args.jobs and not done.is_set():
                stream = watch.Watch()
                try:
                    events = stream.stream(list_call, *list_args, resource_version=version,
                                           timeout_seconds=60)  # fmt: skip
                    for event in events:
                        version = stamp(event["object"])
                        if len(seen) >= args.jobs or done.is_set():
                            stream.stop()
                except Exception as exc:
                    print(f"a watch ended ({type(exc).__name__}: {exc}); watching again")
                    if getattr(exc, "status", None) == 410:  # too old: list afresh
                        version = None
                    time.sleep(0.5)

        def job_added(job) -> str:
            arrived.setdefault(job.metadata.name, time.monotonic())
            return job.metadata.resource_version

        def job_running(item: dict) -> str:
            if (item.get("status") or {}).get("phase") == "Running":
                running.setdefault(item["metadata"]["name"], time.monotonic())
            return item["metadata"]["resourceVersion"]

        def watch_jobs() -> None:
            follow(batch.list_namespaced_job, (ns,), arrived, job_added)

        def watch_status() -> None:
            list_args = (GROUP, VERSION, ns, PLURAL)
            follow(custom.list_namespaced_custom_object, list_args, running, job_running)

        watchers = [threading.Thread(target=w, daemon=True) for w in (watch_jobs, watch_status)]
        for watcher in watchers:
            watcher.start()
        if on_grid:
            # The drop comes with the reading of a period start drawn at random among the
            # next few (at least 5 s ahead, so that it is scheduled before it is due).
            first = (int(time.time() + 5) // args.grid + 1) * args.grid
            at = first + args.grid * random.randrange(3)
            for zone in ZONES:
                server.set(zone, intensity=50, from_wall=at)
            drop = time.monotonic() + (at - time.time())
            time.sleep(max(0.0, drop - time.monotonic()))
        else:
            # Where the drop falls in the poll interval decides how long it waits for the
            # zones' next polls (0 up to one interval): drawn at random, so that no fixed
            # timeline of the bench always drops just before (or after) a poll.
            time.sleep(1 + random.uniform(0, args.poll))
            drop = time.monotonic()
            for zone in ZONES:
                server.set(zone, intensity=50)
        while min(len(arrived), len(running)) < args.jobs and time.monotonic() - drop < 600:
            time.sleep(0.5)
        done.set()
        latencies = [t - drop for t in arrived.values()]
        all_running = max(running.values()) - drop if running else float("nan")
        all_created = max(latencies) if latencies else float("nan")
        # Detection waits for the next poll (up to one interval) by design; the spread is
        # the operator's Job-creation throughput alone.
        spread = all_created - min(latencies) if latencies else float("nan")
        # Split the wait for the polls (set by the interval and where in it the drop fell:
        # all zones are polled within about a second of each other, since their jobs were
        # admitted together) from the operator's reaction: from the first provider answer
        # that could carry the drop to the last Job.
        polls = {z: server.times(z) for z in ZONES}
        polled_after = [min((t for t in polls[z] if t >= drop), default=float("nan"))
                        for z in ZONES]  # fmt: skip
        poll_waits = [t - drop for t in polled_after]
        polled_before = max(t for times in polls.values() for t in times if t < drop)
        reaction = max(arrived.values()) - min(polled_after) if arrived else float("nan")
        peak = rss_peak_mb(operator.process.pid)

        # The same Jobs, created directly with the client at the same concurrency, on a quiet
        # apiserver: the operator stopped (it follows 1,000 running Jobs, a read each per
        # poll; its JobCreated Events take kopf a while to post) and the Job controller done.
        # Anything else would slow the direct run down and flatter the ratio.
        operator.stop()
        quiet = wait_quiet(api)

        def create_direct(name: str) -> None:
            body = {"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": name}, "spec": TEMPLATE["spec"]}  # fmt: skip
            batch.create_namespaced_job(direct_ns, body)

        t0 = time.monotonic()
        list(pool.map(create_direct, names))
        direct = time.monotonic() - t0

        print()
        how = f"new reading every {args.grid} s" if on_grid else "in place, at random"
        print(f"jobs={args.jobs} zones={len(ZONES)} poll={args.poll:g}s workers={args.workers} "
              f"drop={args.drop} ({how})")  # fmt: skip
        print(f"{'figure':58} {'measured':>12} {'goal':>10}")
        rows = [
            ("provider requests per poll interval (all zones)", f"{sum(per_zone):.1f}", "10"),
            ("  per zone, max", f"{max(per_zone):.2f}", "1"),
            ("Jobs created after the drop", f"{len(arrived)}/{args.jobs}", "all"),
            ("drop -> Job created, p50 (s)", f"{percentile(latencies, 0.5):.2f}", ""),
            ("drop -> Job created, p95 (s)", f"{percentile(latencies, 0.95):.2f}", ""),
            ("drop -> all Jobs created (s)", f"{all_created:.2f}", ""),
            ("first to last Job created after the drop (s)", f"{spread:.2f}", ""),
            (
                "  the zones' last poll before the drop -> the drop (s)",
                f"{drop - polled_before:.2f}",
                "",
            ),
            (
                "  drop -> the zones' next polls, first..last (s)",
                f"{min(poll_waits):.2f}..{max(poll_waits):.2f}",
                f"<= {args.poll:g}",
            ),
            ("  first poll after the drop -> all Jobs created (s)", f"{reaction:.2f}", ""),
            (f"creating the same Jobs directly (s; from {quiet:.1f} req/s)", f"{direct:.2f}", ""),
            ("ratio (all created after drop / direct)", f"{all_created / direct:.2f}x", "<= 2x"),
            ("ratio (first to last created / direct)", f"{spread / direct:.2f}x", ""),
            (
                "ratio (first poll after the drop -> all created / direct)",
                f"{reaction / direct:.2f}x",
                "",
            ),
            (f"drop -> all {len(running)} status Running (s)", f"{all_running:.2f}", ""),
            ("operator peak RSS (MB)", f"{peak:.0f}", "<= 200"),
            ("apiserver requests/s, idle (before the operator)", f"{idle_rate:.1f}", ""),
            ("apiserver requests/s, jobs waiting", f"{busy_rate:.1f}", ""),
            ("  the operator's share", f"{busy_rate - idle_rate:.1f}", "low"),
            ("apiserver requests per job and new reading (grid)", f"{per_reading:.2f}", ""),
        ]
        for label, value, goal in rows:
            print(f"{label:58} {value:>12} {goal:>10}")
        by_zone: dict[str, list[float]] = {}
        for name, at in arrived.items():
            by_zone.setdefault(zone_of[name.rsplit("-", 1)[0]], []).append(at - drop)
        print("drop -> first..last Job, per zone (s): " + ", ".join(
            f"{z[6:]}: {min(v):.1f}..{max(v):.1f}" for z, v in sorted(by_zone.items())
        ))  # fmt: skip
        zone_done = [max(v) for v in by_zone.values()]
        print(f"drop -> all of a zone's Jobs created, over the zones: "
              f"p50 {percentile(zone_done, 0.5):.2f} s, "
              f"p95 {percentile(zone_done, 0.95):.2f} s")  # fmt: skip
        print(f"(median p50 over zones: "
              f"{statistics.median(per_zone):.2f} requests/zone/interval)")  # fmt: skip
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        operator.stop()
        release(api, ns)
        server.stop()
        for name in (ns, direct_ns):
            core.delete_namespace(name, propagation_policy="Background")
        print(f"operator log: {log}", file=sys.stderr)
        os.environ.pop("_", None)


if __name__ == "__main__":
    main()
