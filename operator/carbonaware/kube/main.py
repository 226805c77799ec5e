"""``carbonaware-operator``: handler registration and kopf settings, nothing else.

kopf's known pitfalls, settled here:

- watch streams: the client timeout is above the server timeout, so the server ends each
  watch cleanly and kopf reconnects, instead of a silently dead TCP stream;
- API errors and HTTP 429: retried with backoffs, honouring ``Retry-After``, for as long as
  they last: kopf escalates once a finite list of backoffs runs out, and a watch that
  escalates an HTTP 5xx ends for good while the process lives on and /healthz still answers
  200 (seen after a 20 s apiserver outage), so the backoffs never run out;
- one pooled aiohttp session with a bounded number of connections: kopf's own has no bound,
  and 1,000 jobs admitted at once opened ~1,700 TLS connections (256 KiB of buffers each:
  430 MB of the operator's 560 MB), and each connection's asyncio read buffer cut from
  256 KiB to 64 KiB;
- two operators never act on one object: peering (a ``ClusterKopfPeering`` named
  ``carbonaware``, manifests/peering.yaml) with a random priority per process, so the
  higher one runs and the other pauses; the Deployment also runs one replica with the
  ``Recreate`` strategy, so a rollout never overlaps two;
- state in annotations under ``carbonaware.io``, never in status (the schema declares status).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import itertools
import logging
import random
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import kopf
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from carbonaware.kube import cronjobs, metrics
from carbonaware.kube.carbon_gate import register_gate
from carbonaware.kube.handlers import KubeApi, Runtime, register
from carbonaware.kube.settings import OperatorSettings, SettingsError, load_settings
from carbonaware.kube.wakeups import ZoneBells
from carbonaware.providers.cache import ProviderCache

WATCH_SERVER_TIMEOUT = 270  # seconds; the apiserver closes each watch after this
WATCH_CLIENT_TIMEOUT = 300  # must exceed the server's
# asyncio gives each TLS connection a 256 KiB read buffer, zeroed and so resident: 12.5 MB for
# the ~50 connections kopf holds while 1,000 jobs are admitted. 64 KiB still holds four full
# TLS records (16 KiB each); a large LIST takes more reads, and bench/scale.py's Job wave and
# status times were no slower for it.
TLS_READ_BUFFER_BYTES = 64 * 1024
# Connections kopf may hold beyond one per handler thread: its watch streams (jobs, CRDs,
# namespaces, peering; one per watched namespace), Event posts and the peering keep-alive.
SPARE_CONNECTIONS = 16


class EndlessBackoffs:
    """``backoffs``, then its last value forever. Iterable but not Sized: kopf then retries
    without a limit instead of escalating after the last one."""

    def __init__(self, backoffs: tuple[float, ...]) -> None:
        self.backoffs = backoffs

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.backoffs, itertools.repeat(self.backoffs[-1]))


def connection_limit(settings: OperatorSettings) -> int:
    return settings.workers + 2 * len(settings.namespaces) + SPARE_CONNECTIONS


def pooled_session(info: kopf.ConnectionInfo, limit: int) -> kopf.AiohttpSession:
    """kopf's session, as kopf builds it from ``info``, with at most ``limit`` connections."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    kopf_settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    kopf_settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.networking.request_timeout = 60
    kopf_settings.networking.error_backoffs = EndlessBackoffs(settings.api_backoffs)
    kopf_settings.networking.enforce_retry_after = True  # HTTP 429: wait as long as told
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="carbonaware.io"
    )
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="carbonaware.io", key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = "carbonaware.io/operator"
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.mandatory = False  # without the peering CRD: run, and warn
    kopf_settings.posting.level = logging.INFO  # kopf's own Events only for real news


def build_registry(
    settings: OperatorSettings, kube: KubeApi | None = None
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    bells = ZoneBells()
    runtime = Runtime(
        settings=settings,
        kube=kube or KubeApi(),
        cache=ProviderCache(
            settings.cache_ttl.total_seconds(),
            on_new_reading=bells.ring,
            follow_grid=settings.follow_grid,
        ),
        bells=bells,
    )
    register(registry, runtime)
    cronjobs.register(registry, settings)
    metrics.register(registry)
    register_gate(registry, runtime)  # Kueue Workloads (docs/kueue.md)

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> Any:
        info = kopf.login_via_client(**kwargs)  # async: the session belongs to kopf's loop
        return None if info is None else pooled_session(info, connection_limit(settings))

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
        configure(settings, runtime.settings)
        if not runtime.settings.standalone and not runtime.settings.namespaces:
            ensure_peering(runtime.settings.peering_name, logger)

    return registry


def ensure_peering(name: str, logger: Any) -> None:
    """Create the ClusterKopfPeering object; kopf only patches an existing one."""
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        client.CustomObjectsApi().create_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", body
        )
    except ApiException as exc:
        if exc.status == 409:
            return
        # 404: the peering CRD is not installed; kopf then runs alone and says so.
        logger.warning(f"cannot create the peering object {name!r}: HTTP {exc.status}")


def shrink_tls_read_buffers(size: int = TLS_READ_BUFFER_BYTES) -> None:
    """Every asyncio TLS connection opened from now on reads through a ``size`` buffer."""
    # Not a documented setting: asyncio reads the class attribute for each new connection
    # (checked on CPython 3.11, which the images run). An asyncio without it keeps its own.
    if hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
        asyncio.sslproto.SSLProtocol.max_size = size


def _load_kube_config(workers: int) -> None:
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    # One pooled connection per handler thread: with the client's default (5 per CPU) the
    # threads kept opening TLS connections and discarding them ("Connection pool is full").
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = max(workers, configuration.connection_pool_maxsize)
    client.Configuration.set_default(configuration)


def run() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
        _load_kube_config(settings.workers)
    except (SettingsError, kube_config.ConfigException) as exc:
        print(f"carbonaware-operator: error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        metrics.serve(settings.metrics_port)
    except OSError as exc:
        print(
            f"carbonaware-operator: error: metrics port {settings.metrics_port}: {exc.strerror}",
            file=sys.stderr,
        )
        sys.exit(2)
    # One line per handler run is noise at 1,000 jobs; failures still log as errors.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    shrink_tls_read_buffers()
    registry = build_registry(settings)
    kopf.run(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.standalone,
        priority=settings.priority if settings.priority is not None else random.randint(1, 10**6),
        peering_name=settings.peering_name,
        liveness_endpoint=settings.liveness_endpoint or None,
    )


if __name__ == "__main__":
    run()
