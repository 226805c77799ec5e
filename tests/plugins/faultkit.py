"""Reliability test kit: a fault-injecting Electricity Maps server and an operator subprocess.

- :class:`FaultServer` is a real HTTP server on loopback (pytest-httpserver / werkzeug,
  threaded so a hanging answer does not block the others) speaking the Electricity Maps v3
  shape (``/v3/carbon-intensity/latest|history|past-range|forecast?zone=``). Each zone has a
  mode that a test switches at any time: ``ok``, ``hang`` (answers after the client's
  timeout), ``error500``,
  ``ratelimit`` (429 with ``Retry-After``), ``malformed`` (not JSON), ``empty`` (no history, a
  null latest value), ``gone`` (404, the unknown-zone body), ``stale`` (readings two days
  old), ``leaky`` (401 and 500 whose bodies echo the caller's token back, as careless APIs
  do; not Electricity Maps' own shape), ``badtoken`` (the API's 401 for a rejected token).
  Endpoints the token's plan lacks (``not_in_plan``, by default the forecast, as on a free
  account) answer the API's 401 "Request unauthorized for zoneKey=..." body. Error bodies
  come from tests/plugins/provider_bodies.py, which names their sources.
  It counts requests per zone and kind.
- :class:`OperatorProcess` runs ``carbonaware-operator`` as a child process (so it can be
  SIGKILLed and restarted) against a kubeconfig, watching given namespaces, logging to a file.
- :func:`batch_jobs` lists each CarbonAwareJob's batch Jobs; :func:`finish_pod` plays the
  kubelet for pods kept off every node (off_node) and reports one terminated.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobapi import GROUP, VERSION
from provider_bodies import EM_BAD_TOKEN, em_not_in_plan, em_unknown_zone
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

MODES = (
    "ok", "hang", "error500", "ratelimit", "malformed", "empty", "gone", "stale", "leaky",
    "badtoken",
)  # fmt: skip
# A trainer's termination message (its JSON result line) for tests that play the kubelet.
TRAINER_RESULT = (
    '{"status": "ok", "accuracy": 0.97, "epochs": 1, "wall_seconds": 3.0, "device": "cpu"}'
)
HANG_SECONDS = 12.0  # longer than the Electricity Maps client's 10 s timeout
HOUR = timedelta(hours=1)
OPERATOR = Path(sys.executable).parent / "carbonaware-operator"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class FaultServer:
    """An Electricity Maps v3 look-alike whose answers per zone a test controls."""

    intensity: dict[str, float] = field(default_factory=dict)  # zone -> gCO2eq/kWh
    # zone -> {UTC hour: gCO2eq/kWh}: a daily shape over the zone's intensity, for readings
    # stamped in those hours (latest and history alike)
    by_hour: dict[str, dict[int, float]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)  # zone -> mode (default "ok")
    retry_after_s: int = 2
    # Stamp readings at the start of the hour, as Electricity Maps' hourly data is (its value
    # is updated in place): repeated polls then return the same reading, not a new one.
    hourly_stamps: bool = False
    # Or stamp them on a grid of this many seconds (a provider publishing that often).
    stamp_every_s: int | None = None
    # zone -> (wall time, gCO2eq/kWh): readings stamped from then on have that intensity (a
    # drop that comes with a new reading, as a provider's do)
    scheduled: dict[str, tuple[float, float]] = field(default_factory=dict)
    # the endpoints the token's plan lacks: a free account has latest and history only
    not_in_plan: set[str] = field(default_factory=lambda: {"forecast"})
    requests: Counter = field(default_factory=Counter)  # (zone, kind) -> count
    arrivals: list = field(default_factory=list)  # (monotonic time, zone, kind)
    tokens_seen: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: HTTPServer | None = None

    def start(self) -> FaultServer:
        self._server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        for kind in ("latest", "history", "past-range", "forecast"):
            self._server.expect_request(f"/v3/carbon-intensity/{kind}").respond_with_handler(
                lambda request, kind=kind: self._answer(kind, request)
            )
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.clear()
            self._server.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return self._server.url_for("/").rstrip("/")

    def set(
        self,
        zone: str,
        mode: str | None = None,
        intensity: float | None = None,
        by_hour: dict[int, float] | None = None,
        from_wall: float | None = None,
    ) -> None:
        """``from_wall`` (with ``intensity``): the change applies to readings stamped from
        that wall time on, not at once."""
        assert mode is None or mode in MODES, mode
        with self._lock:
            if from_wall is not None:
                assert intensity is not None
                self.scheduled[zone] = (from_wall, intensity)
                intensity = None
            if mode is not None:
                self.modes[zone] = mode
            if intensity is not None:
                self.intensity[zone] = intensity
            if by_hour is not None:
                self.by_hour[zone] = dict(by_hour)

    def count(self, zone: str, kind: str | None = None) -> int:
        with self._lock:
            return sum(n for (z, k), n in self.requests.items() if z == zone and kind in (None, k))

    def times(self, zone: str) -> list[float]:
        """When each request for ``zone`` arrived (monotonic seconds)."""
        with self._lock:
            return [t for t, z, _ in self.arrivals if z == zone]

    def _answer(self, kind: str, request: Request) -> Response:
        zone = request.args.get("zone", "")
        with self._lock:
            self.requests[(zone, kind)] += 1
            self.arrivals.append((time.monotonic(), zone, kind))
            self.tokens_seen.add(request.headers.get("auth-token", ""))
            mode = self.modes.get(zone, "ok")
            value = self.intensity.get(zone, 300.0)
            shape = self.by_hour.get(zone, {})
            scheduled = self.scheduled.get(zone)
        if mode == "hang":
            time.sleep(HANG_SECONDS)
            return Response("{}", 200, content_type="application/json")
        if mode == "error500":
            return _json({"error": "internal error"}, 500)
        if mode == "ratelimit":
            response = _json({"message": "rate limit exceeded"}, 429)
            response.headers["Retry-After"] = str(self.retry_after_s)
            return response
        if mode == "malformed":
            return Response("{carbonIntensity: oops", 200, content_type="application/json")
        if mode == "leaky":
            token = request.headers.get("auth-token", "")
            status = 401 if kind == "latest" else 500
            return _json({"message": f"invalid auth-token {token} for {zone}"}, status)
        if mode == "gone":
            return _json(*em_unknown_zone(zone))
        if mode == "badtoken":
            return _json(*EM_BAD_TOKEN)
        if kind in self.not_in_plan:
            return _json(*em_not_in_plan(zone, kind))
        now = datetime.now(UTC).replace(microsecond=0)
        if self.hourly_stamps:
            now = now.replace(minute=0, second=0)
        if self.stamp_every_s:
            stamp = int(now.timestamp()) // self.stamp_every_s * self.stamp_every_s
            now = datetime.fromtimestamp(stamp, UTC)
        if scheduled is not None and now.timestamp() >= scheduled[0]:
            value = scheduled[1]
        if mode == "stale":
            now -= timedelta(days=2)
        if kind in ("history", "past-range"):  # the last day, or the range asked for
            key, (start, end) = (
                ("history", (now - timedelta(hours=24), now))
                if kind == "history"
                else ("data", _range_asked(request, now))
            )
            if mode == "empty":
                return _json({"zone": zone, key: []})
            hours = range(int((now - start) / HOUR), int((now - min(end, now)) / HOUR), -1)
            stamps = [now - h * HOUR for h in hours]
            points = [_point(zone, ts, shape.get(ts.hour, value)) for ts in stamps]
            return _json({"zone": zone, key: points})
        point = _point(zone, now, None if mode == "empty" else shape.get(now.hour, value))
        return _json(point)


def _range_asked(request: Request, now: datetime) -> tuple[datetime, datetime]:
    """A past-range request's ``start`` and ``end`` (the last day if unreadable)."""
    try:
        start, end = (
            datetime.fromisoformat(request.args[k].replace("Z", "+00:00")) for k in ("start", "end")
        )
    except (KeyError, ValueError):
        return now - timedelta(hours=24), now
    return start, end


def _point(zone: str, ts: datetime, value: float | None) -> dict:
    return {
        "zone": zone,
        "carbonIntensity": value,
        "datetime": iso(ts),
        "updatedAt": iso(ts),
        "emissionFactorType": "direct",
        "isEstimated": False,
    }


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


# --- the operator as a process a test can kill ----------------------------------------


@dataclass
class OperatorProcess:
    """``carbonaware-operator`` as a child process; restartable, killable, its log kept."""

    kubeconfig: Path
    namespaces: tuple[str, ...]
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    standalone: bool = True
    process: subprocess.Popen | None = None
    health_port: int = 0
    starts: int = 0

    def start(self, wait_healthy: bool = True) -> OperatorProcess:
        self.health_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "CARBONAWARE_NAMESPACES": ",".join(self.namespaces),
            "CARBONAWARE_STANDALONE": "true" if self.standalone else "",
            "CARBONAWARE_POLL_FLOOR": "1s",
            "CARBONAWARE_CACHE_TTL": "500ms",
            "CARBONAWARE_METRICS_PORT": "0",
            "CARBONAWARE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.health_port}/healthz",
            "CARBONAWARE_TRAINER_IMAGE": "carbonaware/trainer:dev",
            **self.extra_env,
        }
        self.starts += 1
        with self.log.open("a") as out:
            out.write(f"\n===== start #{self.starts} at {datetime.now(UTC).isoformat()} =====\n")
            out.flush()
            self.process = subprocess.Popen(
                [str(OPERATOR)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        if wait_healthy:
            self.wait_healthy()
        return self

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if not self.alive():
                raise RuntimeError(f"the operator exited:\n{self.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator never became healthy:\n{self.log_text()[-4000:]}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status write; what a node loss or OOM kill does."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            stop_process(self.process)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def stop_process(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the world around the operator: Jobs, and a kubelet played by the test ---------


def batch_jobs(kube_api, ns: str) -> dict[str, list]:
    """CarbonAwareJob name -> its batch Jobs (by the operator's label)."""
    from kubernetes import client

    found: dict[str, list] = defaultdict(list)
    for job in client.BatchV1Api(kube_api).list_namespaced_job(ns).items:
        owner = (job.metadata.labels or {}).get("carbonaware.io/job")
        if owner:
            found[owner].append(job)
    return found


def finish_pod(kube_api, ns: str, job_name: str, exit_code: int, message: str) -> bool:
    """Play the kubelet (off_node keeps real kubelets away): report the pod terminated.

    False when the Job controller has not created the pod yet.
    """
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    pods = core.list_namespaced_pod(
        ns, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    ).items
    if not pods:
        return False
    terminate_pod(kube_api, pods[0], exit_code, message)
    return True


def terminate_pod(kube_api, pod, exit_code: int, message: str) -> None:
    """Play the kubelet for one pod (a V1Pod): its container terminated with ``message``."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    ns = pod.metadata.namespace
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    container = pod.spec.containers[0]
    core.patch_namespaced_pod_status(
        pod.metadata.name,
        ns,
        {
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": container.name,
                        "image": container.image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "message": message,
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            }
        },
    )


def create_em_secret(kube_api, namespace: str) -> None:
    """The Secret ``em`` with a token for the fault server (which takes any token), as the
    jobs of em_threshold_spec name it."""
    from kubernetes import client

    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="em"), string_data={"token": "t"}),
    )


def em_threshold_spec(server: FaultServer, zone: str, poll: str, workload: dict) -> dict:
    """A CarbonAwareJob spec on ``server``'s Electricity Maps look-alike (token from the
    Secret ``em``) that waits for under 100 g/kWh; ``workload`` is its ``trainer`` or
    ``jobTemplate``."""
    return {
        "zone": zone,
        "provider": {
            "name": "electricitymaps",
            "baseUrl": server.base_url,
            "secretRef": {"name": "em"},
        },
        "thresholdGramsPerKWh": 100,
        "maxDelay": "6h",
        "pollInterval": poll,
        **workload,
    }


def release(kube_api, namespace: str) -> None:
    """Drop kopf's finalizers from the CarbonAwareJobs (and cron jobs) left in ``namespace``.

    The operator adds one (its timers need it) and removes it when a job is deleted while it
    runs; once a test has stopped its operator, nothing would, and the namespace would hang
    in Terminating. Call after stopping the operator, before deleting the namespace.
    """
    from kubernetes import client

    api = client.CustomObjectsApi(kube_api)
    for plural in ("carbonawarejobs", "carbonawarecronjobs"):
        try:
            items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
        except client.exceptions.ApiException as exc:
            if exc.status == 404:  # that CRD is not installed
                continue
            raise
        for item in items:
            if item["metadata"].get("finalizers"):
                api.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    item["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )


def install_crds(kubectl: str, kubeconfig: Path, manifests: Path) -> None:
    """Apply the CarbonAwareJob and peering CRDs and wait until both are served."""

    def kubectl_ok(*args: str) -> None:
        result = subprocess.run(
            [kubectl, "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stderr

    for name in ("crd.yaml", "cronjob-crd.yaml", "peering.yaml"):
        kubectl_ok("apply", "-f", str(manifests / name))
    for crd in (
        "carbonawarejobs.carbonaware.io",
        "carbonawarecronjobs.carbonaware.io",
        "clusterkopfpeerings.kopf.dev",
    ):
        kubectl_ok("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
