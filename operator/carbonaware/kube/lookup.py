"""Read a CarbonAwareJob and its log from a cluster, for people (kubectl carbon, carbonctl plot).

Every failure a user can cause (no kubeconfig, no CRD, no such job, no log yet, an
unreachable apiserver) is a ``LookupFailed`` with one line that says what to do.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from carbonaware.core.intensity_log import IntensityLog
from carbonaware.kube.builders import GROUP, LOG_CSV_KEY, PLOT_KEY, PLURAL, VERSION
from carbonaware.kube.builders import log_configmap_name as default_log_name
from carbonaware.providers.base import ConfigError

CRD_NAME = f"{PLURAL}.{GROUP}"
NO_CRD = (
    "the CarbonAwareJob CRD is not installed in this cluster "
    "(install it with: kubectl apply -k manifests/)"
)


class LookupFailed(ConfigError):
    """A job or its log could not be read; the message says why in one line."""


def connect(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``/``context`` ($KUBECONFIG, ~/.kube/config), or the
    in-cluster ServiceAccount when running in a pod with no kubeconfig."""
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config()
                return client.ApiClient()
            except config.ConfigException:
                pass
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        raise LookupFailed(f"cannot load the kubeconfig: {exc}") from None


def current_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's context, as kubectl picks it ("default" if unset)."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, TypeError, ValueError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


def _call(what: str, fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except HTTPError as exc:
        raise LookupFailed(f"cannot reach the Kubernetes API to {what}: {exc}") from None
    except ApiException as exc:
        if exc.status in (401, 403):
            raise LookupFailed(f"not allowed to {what} (HTTP {exc.status})") from None
        raise


def _crd_missing(api: client.ApiClient) -> bool:
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
    except ApiException as exc:
        return exc.status == 404
    return False


def get_job(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    try:
        return _call(
            f"read CarbonAwareJob {namespace}/{name}",
            custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )
    except ApiException as exc:
        if exc.status != 404:
            raise LookupFailed(f"reading CarbonAwareJob {namespace}/{name}: {exc.reason}") from None
        if _crd_missing(api):
            raise LookupFailed(NO_CRD) from None
        raise LookupFailed(
            f'CarbonAwareJob "{name}" not found in namespace "{namespace}"'
        ) from None


def list_jobs(api: client.ApiClient, namespace: str | None) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(api)
    try:
        if namespace is None:
            found = _call(
                "list CarbonAwareJobs", custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
            )
        else:
            found = _call(
                f"list CarbonAwareJobs in {namespace}",
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
            )
    except ApiException as exc:
        if exc.status == 404 and _crd_missing(api):
            raise LookupFailed(NO_CRD) from None
        raise LookupFailed(f"listing CarbonAwareJobs: {exc.reason}") from None
    return list(found.get("items") or [])


def read_log_configmap(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The job's log ConfigMap (after checking the job exists, for the clearer error)."""
    job = get_job(api, namespace, name)
    configmap = (job.get("status") or {}).get("logConfigMap") or default_log_name(name)
    core = client.CoreV1Api(api)
    try:
        found = _call(
            f"read ConfigMap {namespace}/{configmap}",
            core.read_namespaced_config_map,
            configmap,
            namespace,
        )
    except ApiException as exc:
        if exc.status == 404:
            raise LookupFailed(
                f'CarbonAwareJob "{name}" has no log yet (ConfigMap {configmap} not found; '
                "is the operator running?)"
            ) from None
        raise LookupFailed(f"reading ConfigMap {namespace}/{configmap}: {exc.reason}") from None
    return api.sanitize_for_serialization(found)


def read_job_log(api: client.ApiClient, namespace: str, name: str) -> IntensityLog:
    configmap = read_log_configmap(api, namespace, name)
    text = (configmap.get("data") or {}).get(LOG_CSV_KEY)
    if not text:
        raise LookupFailed(f'CarbonAwareJob "{name}" has no readings logged yet')
    try:
        return IntensityLog.from_csv(text)
    except ValueError as exc:
        raise LookupFailed(f'the log of CarbonAwareJob "{name}" is damaged: {exc}') from None


def stored_plot(configmap: dict[str, Any]) -> bytes | None:
    """The PNG the operator stored when the job finished, if it fitted."""
    encoded = (configmap.get("binaryData") or {}).get(PLOT_KEY)
    return base64.b64decode(encoded) if encoded else None


def read_job_log_from_cluster(
    name: str,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> IntensityLog:
    """A job's intensity log as it stands now, from its ConfigMap (for plotting)."""
    api = connect(kubeconfig, context)
    return read_job_log(api, namespace or current_namespace(kubeconfig, context), name)


def get_cronjob(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """A CarbonAwareCronJob, or None when there is none of that name (or no such CRD)."""
    custom = client.CustomObjectsApi(api)
    try:
        return _call(
            f"read CarbonAwareCronJob {namespace}/{name}",
            custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "carbonawarecronjobs",
            name,
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise LookupFailed(f"reading CarbonAwareCronJob {namespace}/{name}: {exc.reason}") from None
