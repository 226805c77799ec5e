"""Pure builders: every Kubernetes object and status patch the operator writes.

No API calls here; handlers call these and send the result. Tests call them directly.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import datetime
from typing import Any

from carbonaware import __version__
from carbonaware.core.log_metadata import LogKey
from carbonaware.core.model import utc
from carbonaware.kube.models import CarbonAwareJobSpec, TrainerSpec
from carbonaware.kube.pod_placement import placed_job

GROUP = "carbonaware.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CarbonAwareJob"
PLURAL = "carbonawarejobs"

JOB_LABEL = f"{GROUP}/job"  # value: the CarbonAwareJob's name
OWNER_UID_LABEL = f"{GROUP}/owner-uid"
MANAGED_BY = {"app.kubernetes.io/managed-by": "carbonaware-operator"}
APP_NAME = "carbonaware"
# app.kubernetes.io/component of what the operator creates.
JOB_COMPONENT = "training-job"
LOG_COMPONENT = "intensity-log"
TRAINER_CONTAINER = "trainer"
LOG_CSV_KEY = "carbon_log.csv"
LOG_META_KEY = "metadata.json"
PLOT_KEY = "carbon_plot.png"
# A ConfigMap holds at most 1 MiB in all; keep room for keys and metadata.
CONFIGMAP_LIMIT_BYTES = 1024 * 1024 - 16 * 1024

# Non-root, read-only root filesystem, no escalation, no capabilities, default seccomp.
RUN_AS_USER = 10001
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# A dataVolume PVC holds MNIST/raw at its root; mounted beside, not over, the image's own
# /data/mnist (the trainer image's MNIST_DIR).
DATA_MOUNT = "/mnt/mnist"
CHECKPOINT_MOUNT = "/work/checkpoints"  # the trainer's --checkpoint-dir
DEFAULT_TRAINER_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}


def iso(ts: datetime) -> str:
    """RFC 3339 UTC with a Z, the way Kubernetes writes times."""
    return utc(ts).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _dns_label(text: str, limit: int) -> str:
    return text[:limit].rstrip("-.")


def job_name(name: str, uid: str) -> str:
    """The one Job name for a CarbonAwareJob: stable across retries and restarts.

    Includes a hash of the uid so a deleted and re-created CarbonAwareJob of the same name
    never adopts the old one's Job; at most 63 characters (Job names become pod labels).
    """
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    return f"{_dns_label(name, 54)}-{digest}"


def log_configmap_name(name: str) -> str:
    return f"{_dns_label(name, 253 - len('-carbon-log'))}-carbon-log"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _app_labels(name: str, component: str) -> dict[str, str]:
    """The app.kubernetes.io set except managed-by: instance is the CarbonAwareJob's name."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": _dns_label(name, 63),
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": APP_NAME,
    }


def _labels(name: str, component: str) -> dict[str, str]:
    """Every label the operator puts on what it creates: the full app.kubernetes.io set
    (managed-by: the operator) and the owning CarbonAwareJob's name."""
    return {**_app_labels(name, component), **MANAGED_BY, JOB_LABEL: _dns_label(name, 63)}


def _workload_labels(name: str, user_labels: dict[str, str] | None) -> dict[str, str]:
    """A jobTemplate's labels: the user's name/instance/component/... describe their own
    workload and win over our defaults; managed-by and the owner label are always ours."""
    return {
        **_app_labels(name, JOB_COMPONENT),
        **(user_labels or {}),
        **MANAGED_BY,
        JOB_LABEL: _dns_label(name, 63),
    }


def _trainer_args(trainer: TrainerSpec) -> list[str]:
    # carbon-trainer writes its JSON result to /dev/termination-log itself.
    args = [
        "--epochs",
        str(trainer.epochs),
        "--batch-size",
        str(trainer.batch_size),
        "--output-dir",
        "/work/output",
        "--checkpoint-dir",
        CHECKPOINT_MOUNT,
    ]
    if trainer.learning_rate is not None:
        args += ["--lr", f"{trainer.learning_rate:g}"]
    if trainer.max_samples is not None:
        args += ["--max-samples", str(trainer.max_samples)]
    if trainer.data_volume is not None:
        args += ["--data-dir", DATA_MOUNT]
    return args


def _trainer_pod_spec(trainer: TrainerSpec, default_image: str) -> dict[str, Any]:
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "work", "mountPath": "/work"},  # checkpoints and outputs
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "work", "emptyDir": {"sizeLimit": "2Gi"}},
    ]
    if trainer.data_volume is not None:
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": "data",
                "persistentVolumeClaim": {
                    "claimName": trainer.data_volume.claim_name,
                    "readOnly": True,
                },
            }
        )
    if trainer.checkpoint_volume is not None:
        # Over the emptyDir's subfolder: checkpoints outlive the pod, so a resumed Job's new
        # pod continues from the last one's.
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT})
        volumes.append(
            {
                "name": "checkpoints",
                "persistentVolumeClaim": {"claimName": trainer.checkpoint_volume.claim_name},
            }
        )
    container = {
        "name": TRAINER_CONTAINER,
        "image": trainer.image or default_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["carbon-trainer"],
        "args": _trainer_args(trainer),
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            {"name": "TORCH_HOME", "value": "/tmp/torch"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "resources": trainer.resources or DEFAULT_TRAINER_RESOURCES,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePath": "/dev/termination-log",
        # The trainer writes JSON there; if it dies first, the log tail says why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "containers": [container],
        "volumes": volumes,
    }
    if trainer.node_selector:
        pod_spec["nodeSelector"] = dict(trainer.node_selector)
    if trainer.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in trainer.tolerations]
    return pod_spec


def build_job_spec(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: CarbonAwareJobSpec,
    default_trainer_image: str,
    suspend: bool | None = None,
    placement: int = 0,
) -> dict[str, Any]:
    """The batch/v1 Job that runs the workload, owned by the CarbonAwareJob.

    ``suspend`` (interruptible jobs): created suspended or running, as the decision says.
    ``placement``: which of ``spec.placements`` its pods run in (kube/pod_placement.py).
    """
    labels = _labels(name, JOB_COMPONENT)
    metadata = {
        "name": job_name(name, uid),
        "namespace": namespace,
        "labels": labels,
        "annotations": {OWNER_UID_LABEL: uid},
        "ownerReferences": [owner_reference(name, uid)],
    }
    if spec.job_template is not None:
        template = copy.deepcopy(spec.job_template)
        user_meta = template.get("metadata") or {}
        metadata["labels"] = _workload_labels(name, user_meta.get("labels"))
        metadata["annotations"] = {**(user_meta.get("annotations") or {}), OWNER_UID_LABEL: uid}
        job_spec = template["spec"]
        pod_meta = job_spec["template"].setdefault("metadata", {})
        pod_meta["labels"] = _workload_labels(name, pod_meta.get("labels"))
        job_spec["template"]["spec"].setdefault("restartPolicy", "Never")
    elif spec.trainer is not None:
        job_spec = {
            "backoffLimit": spec.trainer.backoff_limit,
            "template": {
                "metadata": {"labels": labels},
                "spec": _trainer_pod_spec(spec.trainer, default_trainer_image),
            },
        }
    else:  # parse_spec refuses such a spec; never build a Job without a workload
        raise ValueError("the spec has neither trainer nor jobTemplate")
    if suspend is not None:
        job_spec["suspend"] = suspend
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
    return placed_job(job, spec.placements[placement]) if spec.placements else job


def build_suspend_patch(suspend: bool) -> dict[str, Any]:
    """The merge patch that pauses (the Job controller deletes the pods: SIGTERM, the trainer
    checkpoints and exits) or resumes (a new pod resumes from the checkpoint) a Job."""
    return {"spec": {"suspend": suspend}}


def open_segment(segments: list[dict[str, Any]] | None, start: datetime) -> list[dict[str, Any]]:
    """Segments with a new running one from ``start`` (unchanged if one is already open)."""
    segments = [dict(s) for s in segments or []]
    if segments and not segments[-1].get("end"):
        return segments
    return [*segments, {"start": iso(start)}]


def close_segment(segments: list[dict[str, Any]] | None, end: datetime) -> list[dict[str, Any]]:
    """Segments with the running one ended at ``end`` (unchanged if none is open)."""
    segments = [dict(s) for s in segments or []]
    if segments and not segments[-1].get("end"):
        segments[-1]["end"] = iso(max(end, parse_time(segments[-1]["start"]) or end))
    return segments


def segment_spans(
    segments: list[dict[str, Any]] | None, now: datetime
) -> list[tuple[datetime, datetime]]:
    """The segments as (start, end) times, an open one ending ``now``."""
    spans = []
    for segment in segments or []:
        start = parse_time(segment.get("start"))
        if start is None:  # not ours (edited by hand): nothing to count
            continue
        end = parse_time(segment.get("end")) or max(now, start)
        spans.append((start, end))
    return spans


def build_log_metadata(spec: CarbonAwareJobSpec, status: dict[str, Any]) -> dict[str, Any]:
    """The job's side of the log's metadata (plotting.py reads these keys)."""
    segments = status.get("segments") or []
    return {
        LogKey.ZONE: spec.zone,
        LogKey.STRATEGY: spec.strategy,
        LogKey.THRESHOLD: f"{spec.threshold_grams_per_kwh:g}",
        LogKey.SUBMITTED_AT: status.get("submittedAt"),
        LogKey.DEADLINE: status.get("deadline"),
        LogKey.STARTED_AT: status.get("startedAt"),
        LogKey.COMPLETED_AT: status.get("completedAt"),
        LogKey.STATUS: status.get("phase"),
        LogKey.CLOCK: status.get("clock"),
        # An interruptible job's stretches of running, "start/end;start/end" (an open one
        # has no end yet): the plot shades these, not one run across the pauses.
        LogKey.RUN_SEGMENTS: ";".join(f"{s['start']}/{s.get('end') or ''}" for s in segments)
        or None,
    }


def build_log_configmap(
    *,
    name: str,
    namespace: str,
    uid: str,
    csv_text: str,
    metadata: dict[str, Any] | None = None,
    plot_png: bytes | None = None,
    stored_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The job's intensity log ConfigMap; the plot goes in binaryData only when it fits.

    ``stored_metadata`` is the stored copy's: the labels and annotations others put on it
    (a backup selector, a note) are kept, since the operator writes the whole object back.
    """
    data = {LOG_CSV_KEY: csv_text, LOG_META_KEY: json.dumps(metadata or {}, sort_keys=True)}
    kept = stored_metadata or {}
    meta: dict[str, Any] = {
        "name": log_configmap_name(name),
        "namespace": namespace,
        "labels": {**(kept.get("labels") or {}), **_labels(name, LOG_COMPONENT)},  # ours win
        "ownerReferences": [owner_reference(name, uid)],
    }
    if kept.get("annotations"):
        meta["annotations"] = dict(kept["annotations"])
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
    if plot_png is not None:
        encoded = base64.b64encode(plot_png).decode()
        used = sum(len(k) + len(v.encode()) for k, v in data.items())
        if used + len(PLOT_KEY) + len(encoded) <= CONFIGMAP_LIMIT_BYTES:
            body["binaryData"] = {PLOT_KEY: encoded}
    return body
