"""CarbonAwareCronJob against a real control plane: runs at their scheduled times, Forbid and
Replace as CronJob's, one run per time across an operator restart, history limits.

The operator runs as a subprocess (both controllers: cron jobs and their CarbonAwareJobs).
The template replays the bundled demo trace at 1200x (one trace hour, one scheduled time of
"0 * * * *", per 3 s of wall time), so the schedule runs on the trace's clock. No node: where
a run must finish the test plays the kubelet (faultkit.finish_pod) with the trainer's real
report line (carbontrainer.report.to_json_line), and the real Job controller completes or
fails the Job.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import faultkit
import pytest
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import OperatorProcess, release
from jobapi import trainer_line

pytestmark = pytest.mark.integration

GROUP, VERSION = "carbonaware.io", "v1alpha1"
CRONS, JOBS = "carbonawarecronjobs", "carbonawarejobs"
SPEED = 1200  # trace seconds per wall second: an hourly schedule fires every 3 s
PERIOD_S = 3600 / SPEED


def template(**overrides) -> dict:
    """A run that starts at once (threshold above every reading of the demo trace)."""
    return {
        "zone": "SYNTHETIC",
        "provider": {"name": "replay", "speed": SPEED, "start": "10h"},
        "thresholdGramsPerKWh": 1000,
        "pollInterval": "1s",
        "power": {"watts": 100, "pue": 1.2},
        "trainer": off_node({"epochs": 1}),
    } | overrides


def cron_spec(**overrides) -> dict:
    return {"schedule": "0 * * * *", "window": "2h", "jobTemplate": template()} | overrides


def api(kube_api):
    from kubernetes import client

    return client.CustomObjectsApi(kube_api)


def create_cron(kube_api, ns: str, name: str, spec: dict) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CarbonAwareCronJob",
        "metadata": {"name": name},
        "spec": spec,
    }
    return api(kube_api).create_namespaced_custom_object(GROUP, VERSION, ns, CRONS, body)


def cron(kube_api, ns: str, name: str) -> dict:
    return api(kube_api).get_namespaced_custom_object(GROUP, VERSION, ns, CRONS, name)


def runs(kube_api, ns: str, name: str) -> list[dict]:
    """The cron job's runs, by scheduled time."""
    items = api(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, ns, JOBS, label_selector=f"carbonaware.io/cronjob={name}"
    )["items"]
    return sorted(items, key=scheduled)


def scheduled(run: dict) -> datetime:
    return parse(run["metadata"]["annotations"]["carbonaware.io/scheduled-time"])


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def set_suspend(kube_api, ns: str, name: str, suspend: bool) -> None:
    api(kube_api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, CRONS, name, {"spec": {"suspend": suspend}}
    )


def event_reasons(kube_api, ns: str, name: str) -> list[str]:
    from kubernetes import client

    events = client.CoreV1Api(kube_api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}"
    )
    return [e.reason for e in events.items for _ in range(e.count or 1)]


def run_status(kube_api, ns: str, name: str) -> dict:
    return (
        api(kube_api).get_namespaced_custom_object(GROUP, VERSION, ns, JOBS, name).get("status")
        or {}
    )


def finish(kube_api, ns: str, run_name: str, ok: bool) -> None:
    """Play the kubelet for the run's Job with the trainer's own report line."""

    def with_job() -> dict | None:
        status = run_status(kube_api, ns, run_name)
        return status if status.get("jobName") else None

    status = wait_for(with_job, 60, f"run {run_name} to create its Job")
    report = trainer_line(status="ok" if ok else "error")
    wait_for(
        lambda: faultkit.finish_pod(kube_api, ns, status["jobName"], 0 if ok else 1, report),
        30,
        f"the Job controller to create {status['jobName']}'s pod",
    )


@contextmanager
def operator_in_namespace(kube_api, kubeconfig: Path, log: Path) -> Iterator[tuple]:
    with throwaway_namespace(kube_api, "cron") as ns:
        process = OperatorProcess(kubeconfig, (ns,), log).start()
        try:
            yield ns, process
        finally:
            process.stop()
            release(kube_api, ns)


@pytest.fixture(scope="module")
def shared(crd, kube_api, kubeconfig: Path, tmp_path_factory) -> Iterator[tuple]:
    """One operator and namespace for the tests that do not restart it (distinct names)."""
    log = tmp_path_factory.mktemp("cron") / "operator.log"
    with operator_in_namespace(kube_api, kubeconfig, log) as running:
        yield running


@pytest.fixture
def operator(crd, kube_api, kubeconfig: Path, tmp_path: Path) -> Iterator[tuple]:
    """An operator of the test's own, which it may kill."""
    with operator_in_namespace(kube_api, kubeconfig, tmp_path / "operator.log") as running:
        yield running


@pytest.mark.slow  # ~40 s: four runs, each finished, then the history pruned
def test_runs_at_each_scheduled_time_totals_the_series_and_prunes_history(
    shared, kube_api, kubectl: str, kubeconfig: Path, tmp_path: Path
) -> None:
    from kubernetes import client

    ns, _ = shared
    spec = cron_spec(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1)
    create_cron(kube_api, ns, "nightly", spec)
    wait_for(lambda: len(runs(kube_api, ns, "nightly")) >= 4, 60, "four runs")
    set_suspend(kube_api, ns, "nightly", True)
    time.sleep(2 * PERIOD_S)  # a run being created as it was suspended shows up by now
    series = runs(kube_api, ns, "nightly")
    times = [scheduled(r) for r in series]
    # One run per scheduled time, each on the hour, one hour apart.
    assert all(t.minute == 0 and t.second == 0 for t in times)
    assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(hours=1)] * (len(times) - 1)
    # Each was created at its scheduled time: wall-clock gaps match the trace gaps / speed.
    created = [parse(r["metadata"]["creationTimestamp"]) for r in series]
    for i in range(1, len(series)):
        wall = (created[i] - created[0]).total_seconds()
        assert abs(wall - (times[i] - times[0]).total_seconds() / SPEED) <= 1.5
    owner = series[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "CarbonAwareCronJob",
        "nightly",
        True,
    )
    # Each run is a CarbonAwareJob that waits within the window from its scheduled time.
    first_name = series[0]["metadata"]["name"]
    first = wait_for(
        lambda: (lambda st: st if st.get("deadline") else None)(
            run_status(kube_api, ns, first_name)
        ),
        30,
        "the first run's status",
    )
    assert parse(first["submittedAt"]) == times[0]
    assert parse(first["deadline"]) == times[0] + timedelta(hours=2)

    # All but the last succeed, the last fails; the totals add up what each run accounted.
    names = [r["metadata"]["name"] for r in series]
    logs = {n: f"{n}-carbon-log" for n in names}
    for name in names[:-1]:
        finish(kube_api, ns, name, ok=True)
    finish(kube_api, ns, names[-1], ok=False)
    done = {}

    def all_counted() -> bool:
        for run in runs(kube_api, ns, "nightly"):
            if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                done[run["metadata"]["name"]] = run["status"]
        totals = (cron(kube_api, ns, "nightly").get("status") or {}).get("totals") or {}
        return totals.get("runs") == len(names)

    wait_for(all_counted, 90, "every run finished and counted")
    status = cron(kube_api, ns, "nightly")["status"]
    totals = status["totals"]
    assert (totals["succeeded"], totals["failed"]) == (len(names) - 1, 1)
    assert totals["onTime"] == len(names)  # threshold 1000: each started at once
    succeeded = [done[n] for n in names[:-1] if n in done]
    assert len(succeeded) == len(names) - 1, "every succeeded run was seen before its pruning"
    assert totals["savedGrams"] == pytest.approx(
        sum(s.get("savedGrams", 0.0) for s in done.values()), abs=1e-3
    )
    assert totals["energyKWh"] == pytest.approx(
        sum(s.get("energyKWh", 0.0) for s in done.values()), rel=1e-6
    )
    assert all(s["energyKWh"] == pytest.approx(0.002 * 1.2) for s in succeeded)  # measured x PUE
    assert [e["name"] for e in status["series"]] == sorted(done, key=names.index)
    assert status["active"] == []

    # History: the newest 2 succeeded and 1 failed runs stay; older ones go with their Job
    # and intensity log (ownerReferences: the garbage collector removes them).
    keep = [*names[-3:-1], names[-1]]
    wait_for(
        lambda: [r["metadata"]["name"] for r in runs(kube_api, ns, "nightly")] == keep,
        60,
        f"history pruned to {keep}",
    )
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)

    def gone(name: str) -> bool:
        maps = {m.metadata.name for m in core.list_namespaced_config_map(ns).items}
        jobs = {
            (j.metadata.labels or {}).get("carbonaware.io/job")
            for j in batch.list_namespaced_job(ns).items
        }
        return logs[name] not in maps and name not in jobs

    for name in names[:-3]:
        wait_for(lambda name=name: gone(name), 60, f"{name}'s Job and log to be collected")
    assert "RunDeleted" in event_reasons(kube_api, ns, "nightly")

    row = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "-n", ns, "get", "cacj", "nightly"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    header, values = row[0].split(), row[1].split()
    assert header[:7] == ["NAME", "SCHEDULE", "SUSPEND", "LAST", "RUN", "NEXT", "RUN"]
    assert values[1:6] == ["0", "*", "*", "*", "*"] and values[6] == "true"
    assert values[7] == status["lastScheduleTime"]

    # kubectl carbon plot draws the series from the cron job's status (status.series, pruned
    # runs included).
    from carbonaware.cli.kubectl_carbon import main as kubectl_carbon

    out = tmp_path / "series.png"
    kubectl_carbon(
        ["plot", "cacj/nightly", "-n", ns, "--kubeconfig", str(kubeconfig), "-o", str(out)]
    )
    assert out.read_bytes().startswith(b"\x89PNG")


def test_forbid_holds_the_next_run_back_and_replace_deletes_the_active_one(
    shared, kube_api
) -> None:
    ns, _ = shared
    create_cron(kube_api, ns, "forbid", cron_spec(concurrencyPolicy="Forbid"))
    create_cron(kube_api, ns, "replace", cron_spec(concurrencyPolicy="Replace"))
    wait_for(lambda: runs(kube_api, ns, "forbid"), 30, "forbid's first run")
    first = runs(kube_api, ns, "forbid")[0]["metadata"]["name"]
    wait_for(lambda: runs(kube_api, ns, "replace"), 30, "replace's first run")
    time.sleep(3.5 * PERIOD_S)  # three more scheduled times

    # Forbid: the first run is still active (its pod never finished), so no second one.
    assert [r["metadata"]["name"] for r in runs(kube_api, ns, "forbid")] == [first]
    held = cron(kube_api, ns, "forbid")["status"]
    assert "held back: concurrencyPolicy Forbid" in held["message"]
    assert [a["name"] for a in held["active"]] == [first]
    # Once it finishes, the most recent scheduled time runs (late, as CronJob does).
    finish(kube_api, ns, first, ok=True)
    wait_for(lambda: len(runs(kube_api, ns, "forbid")) == 2, 60, "forbid's next run")
    late = runs(kube_api, ns, "forbid")[1]
    assert scheduled(late) - scheduled(runs(kube_api, ns, "forbid")[0]) >= timedelta(hours=3)

    # Replace: one run at a time, always the latest; the earlier ones were deleted.
    replaced = cron(kube_api, ns, "replace")["status"]
    current = runs(kube_api, ns, "replace")
    live = [r for r in current if not r["metadata"].get("deletionTimestamp")]
    assert len(live) == 1
    assert live[0]["metadata"]["annotations"]["carbonaware.io/scheduled-time"] in (
        replaced["lastScheduleTime"],
        replaced["nextScheduleTime"],  # replaced again between the two reads
    )
    assert event_reasons(kube_api, ns, "replace").count("RunReplaced") >= 2
    for name in ("forbid", "replace"):  # no more runs while the module's other tests run
        set_suspend(kube_api, ns, name, True)


def test_an_operator_restart_across_a_scheduled_time_makes_exactly_one_run(
    operator, kube_api
) -> None:
    ns, process = operator
    # Every 2 trace hours (6 s): room for the restart to fall between two scheduled times.
    create_cron(kube_api, ns, "restart", cron_spec(schedule="0 */2 * * *"))
    wait_for(lambda: runs(kube_api, ns, "restart"), 30, "the first run")
    wait_for(
        lambda: "RunCreated" in event_reasons(kube_api, ns, "restart"), 10, "its RunCreated Event"
    )
    before = runs(kube_api, ns, "restart")
    process.kill()  # SIGKILL
    # As if the crash had come between creating the run and recording it: status lost.
    api(kube_api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        ns,
        CRONS,
        "restart",
        {"status": {"scheduledUpTo": None, "lastScheduleTime": None}},
    )
    time.sleep(2 * PERIOD_S + 1)  # the next scheduled time passes while it is down
    process.start()
    wait_for(lambda: len(runs(kube_api, ns, "restart")) >= 2, 30, "the run missed while down")
    set_suspend(kube_api, ns, "restart", True)
    time.sleep(1.5)
    after = runs(kube_api, ns, "restart")
    times = [scheduled(r) for r in after]
    assert len(set(times)) == len(times), "one run per scheduled time"
    assert after[0]["metadata"]["uid"] == before[0]["metadata"]["uid"]  # kept, not remade
    # Every 2 h: a time passed over while the operator restarted is missed, not run late
    # (only the most recent one runs, as CronJob does), and counted as missed.
    gaps = [(b - a) / timedelta(hours=2) for a, b in itertools.pairwise(times)]
    assert all(g == int(g) and g >= 1 for g in gaps), times
    missed = int(sum(gaps)) - len(gaps)
    assert cron(kube_api, ns, "restart")["status"].get("missedRuns", 0) == missed
    # One RunCreated Event per run: the restarted operator created only the missed one.
    wait_for(
        lambda: event_reasons(kube_api, ns, "restart").count("RunCreated") >= len(after),
        10,
        "the RunCreated Events",
    )
    assert event_reasons(kube_api, ns, "restart").count("RunCreated") == len(after)


def test_a_bad_schedule_or_template_is_refused_or_reported(shared, kube_api) -> None:
    from kubernetes.client.exceptions import ApiException

    ns, _ = shared
    with pytest.raises(ApiException) as refused:
        create_cron(kube_api, ns, "words", cron_spec(schedule="every night"))
    assert "five-field cron line" in refused.value.body
    with pytest.raises(ApiException) as both:
        create_cron(kube_api, ns, "both", cron_spec(jobTemplate=template(maxDelay="4h")))
    assert "not both" in both.value.body
    # Five fields CEL cannot judge (hour 25), and a template the CarbonAwareJob schema refuses:
    # a Ready=False condition with the reason, and no run.
    create_cron(kube_api, ns, "hour25", cron_spec(schedule="0 25 * * *"))
    create_cron(kube_api, ns, "badtpl", cron_spec(jobTemplate=template(strategy="fastest")))
    for name, fragment in [("hour25", "five-field cron line"), ("badtpl", "strategy must be")]:

        def reported(name=name) -> dict | None:
            conditions = (cron(kube_api, ns, name).get("status") or {}).get("conditions") or []
            return next((c for c in conditions if c["type"] == "Ready"), None)

        ready = wait_for(reported, 30, f"{name}'s Ready condition")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert fragment in ready["message"]
        assert runs(kube_api, ns, name) == []


def test_the_example_is_a_valid_cron_job(crd, kube_api, kubectl: str, kubeconfig: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "cronjob.yaml"
    with throwaway_namespace(kube_api, "cron-example") as ns:
        applied = subprocess.run(
            [
                kubectl,
                "--kubeconfig",
                str(kubeconfig),
                "-n",
                ns,
                "apply",
                "--dry-run=server",
                "-f",
                str(example),
            ],
            capture_output=True,
            text=True,
        )
    assert applied.returncode == 0, applied.stderr
    assert "carbonawarecronjob.carbonaware.io/nightly-mnist created (server dry run)" in (
        applied.stdout
    )
