"""The Kubernetes API as the operator uses it: synchronous calls (kopf runs the handlers'
blocking work on worker threads), objects as plain dicts, and what an error means."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from carbonaware.kube import builders
from carbonaware.kube.models import SpecError

# An apiserver that is down, restarting or overloaded answers these (or not at all).
API_UNAVAILABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class ForeignJobError(RuntimeError):
    """A Job with our deterministic name exists but belongs to something else."""


class KubeApi:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return self.api_client.sanitize_for_serialization(obj)

    def _read_or_none(
        self, read: Callable[..., Any], namespace: str, name: str
    ) -> dict[str, Any] | None:
        """``read(name, namespace)`` as a dict; None when there is no such object (404)."""
        try:
            return self._plain(read(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, or None if the key is absent; SpecError if it is missing."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                raise SpecError(
                    f"cannot read Secret {namespace}/{name} for the provider credentials "
                    f"(HTTP {exc.status})"
                ) from None
            raise
        raw = (secret.data or {}).get(key)
        return base64.b64decode(raw).decode().strip() if raw else None

    def read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(self.core.read_namespaced_config_map, namespace, name)

    def write_configmap(self, body: dict[str, Any], resource_version: str | None) -> str:
        """Create (no version) or replace at that version; its new resourceVersion.

        HTTP 409 (ApiException) when someone else wrote first: it exists already, or it
        changed since that version. The caller merges and tries again.
        """
        meta = body["metadata"]
        if resource_version is None:
            created = self.core.create_namespaced_config_map(meta["namespace"], body)
            return created.metadata.resource_version
        body = {**body, "metadata": {**meta, "resourceVersion": resource_version}}
        replaced = self.core.replace_namespaced_config_map(meta["name"], meta["namespace"], body)
        return replaced.metadata.resource_version

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the Job; its JSON as a dict. Not through the client's V1Job model, which
        nothing here reads: at a drop hundreds of Jobs are created at once."""
        namespace = body["metadata"]["namespace"]
        response = self.batch.create_namespaced_job(namespace, body, _preload_content=False)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    def ensure_job(self, body: dict[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        """Create the Job; if it exists (a retry, a restart) adopt it. (job, created)."""
        meta = body["metadata"]
        try:
            return self.create_job(body), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.read_job(meta["namespace"], meta["name"])
        if existing is None:  # deleted between the two calls: try once more
            return self.create_job(body), True
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            raise ForeignJobError(
                f"a Job named {meta['name']} already exists and is not owned by this CarbonAwareJob"
            )
        return existing, False

    def ensure_service(self, body: dict[str, Any]) -> bool:
        """Create the Service; when it exists already (a retry, a restart, a placement's
        fallback Job) point its selector at this body's pods. True when created."""
        meta = body["metadata"]
        try:
            self.core.create_namespaced_service(meta["namespace"], body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            selector = {"spec": {"selector": body["spec"]["selector"]}}
            self.core.patch_namespaced_service(meta["name"], meta["namespace"], selector)
            return False
        return True

    def read_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A PersistentVolumeClaim, or None when there is none (yet)."""
        return self._read_or_none(
            self.core.read_namespaced_persistent_volume_claim, namespace, name
        )

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(self.batch.read_namespaced_job, namespace, name)

    def suspend_job(self, namespace: str, name: str, suspend: bool) -> None:
        self.batch.patch_namespaced_job(name, namespace, builders.build_suspend_patch(suspend))

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
        )
        return [self._plain(p) for p in pods.items]


def api_unavailable(exc: Exception) -> str | None:
    """Why the apiserver could not answer (down, restarting, overloaded), else None."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return f"{exc.url}: {exc.reason}"
    if isinstance(exc, urllib3.exceptions.HTTPError):  # refused, reset, timed out
        return str(exc)
    if isinstance(exc, ApiException) and exc.status in API_UNAVAILABLE_STATUSES:
        return f"HTTP {exc.status} {exc.reason}"
    return None


def api_reason(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or str(exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)
