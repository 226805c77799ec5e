"""Pure builders: the Job, the log ConfigMap, conditions and status patches."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from carbonaware.kube import builders, conditions, job_results
from carbonaware.kube.models import parse_spec

UID = "0b6c2b8e-6c55-4a7e-9d7b-2f0d5b3f1a11"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _trainer_job(**spec_extra):
    spec = parse_spec({"zone": "DE", "trainer": {"epochs": 2}, **spec_extra})
    return builders.build_job_spec(
        name="mnist", namespace="ml", uid=UID, spec=spec, default_trainer_image="trainer:dev"
    )


def test_job_name_is_deterministic_unique_per_uid_and_a_valid_label() -> None:
    assert builders.job_name("mnist", UID) == builders.job_name("mnist", UID)
    assert builders.job_name("mnist", UID) != builders.job_name("mnist", UID.replace("0", "1"))
    long_name = builders.job_name("a" * 253, UID)
    assert len(long_name) <= 63 and not long_name.startswith("-")


def test_trainer_job_is_owned_locked_down_and_reports_by_termination_message() -> None:
    job = _trainer_job()
    assert job["metadata"]["name"] == builders.job_name("mnist", UID)
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "carbonaware.io/v1alpha1",
        "kind": "CarbonAwareJob",
        "name": "mnist",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "trainer:dev"
    assert container["args"][:4] == ["--epochs", "2", "--batch-size", "64"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/work"} <= mounts  # writable scratch and checkpoints on a RO rootfs
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 0


def test_trainer_image_and_data_volume_from_spec() -> None:
    spec = parse_spec(
        {"zone": "DE", "trainer": {"image": "me/t:1", "dataVolume": {"claimName": "mnist"}}}
    )
    job = builders.build_job_spec(
        name="x", namespace="ml", uid=UID, spec=spec, default_trainer_image="trainer:dev"
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "me/t:1"
    assert "--data-dir" in pod["containers"][0]["args"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "mnist", "readOnly": True}} in (
        pod["volumes"]
    )


def test_trainer_placement_goes_to_the_pod_only_when_set() -> None:
    gpu = {"nvidia.com/gpu.present": "true"}
    spot = {"key": "spot", "operator": "Exists", "effect": "NoSchedule"}
    placed = _trainer_job(trainer={"nodeSelector": gpu, "tolerations": [spot]})
    pod = placed["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == gpu and pod["tolerations"] == [spot]
    plain = _trainer_job()["spec"]["template"]["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain


def test_job_template_is_kept_and_owned() -> None:
    template = {
        "metadata": {"labels": {"team": "a"}},
        "spec": {
            "backoffLimit": 3,
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }
    spec = parse_spec({"zone": "DE", "jobTemplate": template})
    job = builders.build_job_spec(
        name="any", namespace="ml", uid=UID, spec=spec, default_trainer_image="unused"
    )
    assert job["spec"]["backoffLimit"] == 3
    assert job["metadata"]["labels"]["team"] == "a"
    assert job["metadata"]["labels"][builders.JOB_LABEL] == "any"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "restartPolicy" not in template["spec"]["template"]["spec"]  # input not mutated


def test_log_configmap_holds_the_plot_only_when_it_fits() -> None:
    small = builders.build_log_configmap(
        name="mnist", namespace="ml", uid=UID, csv_text="t,i\n", plot_png=b"\x89PNG" * 10
    )
    assert small["metadata"]["name"] == "mnist-carbon-log"
    assert base64.b64decode(small["binaryData"][builders.PLOT_KEY]) == b"\x89PNG" * 10
    huge = builders.build_log_configmap(
        name="mnist", namespace="ml", uid=UID, csv_text="x" * 900_000, plot_png=b"p" * 200_000
    )
    assert "binaryData" not in huge
    assert huge["metadata"]["ownerReferences"][0]["uid"] == UID


def test_log_configmap_keeps_the_labels_and_annotations_others_put_on_it() -> None:
    stored = {
        "labels": {"backup": "daily", builders.JOB_LABEL: "renamed-by-hand"},
        "annotations": {"team.example/owner": "ml-platform"},
    }
    body = builders.build_log_configmap(
        name="mnist", namespace="ml", uid=UID, csv_text="t,i\n", stored_metadata=stored
    )
    labels = body["metadata"]["labels"]
    assert labels["backup"] == "daily"
    assert labels[builders.JOB_LABEL] == "mnist"  # ours win: the operator finds logs by them
    assert body["metadata"]["annotations"] == {"team.example/owner": "ml-platform"}
    fresh = builders.build_log_configmap(name="mnist", namespace="ml", uid=UID, csv_text="")
    assert "annotations" not in fresh["metadata"]


def test_condition_transition_time_moves_only_on_flip() -> None:
    first = conditions.set_condition(
        [], type="Scheduled", status=False, reason="Waiting", message="a", generation=1, now=NOW
    )
    later = NOW + timedelta(minutes=5)
    same = conditions.set_condition(
        first,
        type="Scheduled",
        status=False,
        reason="Waiting",
        message="b",
        generation=2,
        now=later,
    )
    assert same[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert same[0]["message"] == "b" and same[0]["observedGeneration"] == 2
    flipped = conditions.set_condition(
        same,
        type="Scheduled",
        status=True,
        reason="JobCreated",
        message="c",
        generation=2,
        now=later,
    )
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    assert len(flipped) == 1


def test_status_patch_is_none_when_nothing_changed() -> None:
    current = {"phase": "Waiting", "currentIntensity": 300.0}
    assert conditions.build_status_patch(current, dict(current)) is None
    assert conditions.build_status_patch(
        current, {"phase": "Waiting", "currentIntensity": 150.0}
    ) == {"currentIntensity": 150.0}


def test_job_outcome_from_conditions() -> None:
    assert job_results.job_outcome({"status": {}}) == ("running", "")
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_results.job_outcome(done)[0] == "succeeded"
    failed = {
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        }
    }
    assert job_results.job_outcome(failed) == (
        "failed",
        "BackoffLimitExceeded: Job has reached the specified backoff limit",
    )


def test_trainer_result_from_the_newest_terminated_pod() -> None:
    def pod(finished: str, message: str) -> dict:
        terminated = {"exitCode": 0, "finishedAt": finished, "message": message}
        return {
            "status": {
                "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]
            }
        }

    pods = [
        pod("2026-01-01T10:00:00Z", "OOMKilled"),
        pod(
            "2026-01-01T11:00:00Z",
            json.dumps({"accuracy": 0.981, "epochs": 1, "energy_kwh": 0.002}),
        ),
    ]
    message = job_results.termination_message(pods)
    result = job_results.parse_trainer_result(message)
    assert result is not None and result.accuracy == 0.981 and result.energy_kwh == 0.002
    assert job_results.parse_trainer_result("Traceback (most recent call last): ...") is None
    assert job_results.termination_message([{"status": {}}]) is None


# --- interruptible jobs -------------------------------------------------------------------


def test_interruptible_job_is_created_suspended_or_running_as_decided() -> None:
    spec = parse_spec({"zone": "DE", "trainer": {}, "interruptible": True})
    common = dict(name="mnist", namespace="ml", uid=UID, spec=spec, default_trainer_image="t")
    assert builders.build_job_spec(**common, suspend=False)["spec"]["suspend"] is False
    assert builders.build_job_spec(**common, suspend=True)["spec"]["suspend"] is True
    assert "suspend" not in _trainer_job()["spec"]  # a plain job leaves the default alone
    assert builders.build_suspend_patch(True) == {"spec": {"suspend": True}}
    assert builders.build_suspend_patch(False) == {"spec": {"suspend": False}}


def test_checkpoint_volume_mounts_a_claim_at_the_trainers_checkpoint_dir() -> None:
    job = _trainer_job(trainer={"checkpointVolume": {"claimName": "ckpt"}})
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("--checkpoint-dir") + 1] == "/work/checkpoints"
    assert {"name": "checkpoints", "mountPath": "/work/checkpoints"} in container["volumeMounts"]
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}} in pod["volumes"]
    plain = _trainer_job()["spec"]["template"]["spec"]
    assert all(v["name"] != "checkpoints" for v in plain["volumes"])


def test_segments_open_close_and_span_to_now() -> None:
    later = NOW + timedelta(hours=2)
    segments = builders.open_segment(None, NOW)
    assert segments == [{"start": "2026-01-01T12:00:00Z"}]
    assert builders.open_segment(segments, later) == segments  # already running
    closed = builders.close_segment(segments, later)
    assert closed == [{"start": "2026-01-01T12:00:00Z", "end": "2026-01-01T14:00:00Z"}]
    assert builders.close_segment(closed, later + timedelta(hours=1)) == closed  # none open
    two = builders.open_segment(closed, later + timedelta(hours=5))
    assert builders.segment_spans(two, later + timedelta(hours=6)) == [
        (NOW, later),
        (later + timedelta(hours=5), later + timedelta(hours=6)),
    ]


APP_LABELS = {
    "app.kubernetes.io/name": "carbonaware",
    "app.kubernetes.io/instance": "mnist",
    "app.kubernetes.io/part-of": "carbonaware",
    "app.kubernetes.io/managed-by": "carbonaware-operator",
}


def test_the_job_its_pods_and_the_log_carry_the_full_app_kubernetes_io_set() -> None:
    from carbonaware import __version__

    job = _trainer_job()
    log = builders.build_log_configmap(name="mnist", namespace="ml", uid=UID, csv_text="")
    for labels, component in (
        (job["metadata"]["labels"], "training-job"),
        (job["spec"]["template"]["metadata"]["labels"], "training-job"),
        (log["metadata"]["labels"], "intensity-log"),
    ):
        assert labels.items() >= APP_LABELS.items()
        assert labels["app.kubernetes.io/component"] == component
        assert labels["app.kubernetes.io/version"] == __version__


def test_a_job_templates_own_app_labels_describe_the_workload_but_not_who_manages_it() -> None:
    own = {"app.kubernetes.io/name": "llm-finetune", "app.kubernetes.io/managed-by": "argo"}
    template = {
        "metadata": {"labels": own},
        "spec": {
            "template": {
                "metadata": {"labels": own},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            }
        },
    }
    spec = parse_spec({"zone": "DE", "jobTemplate": template})
    job = builders.build_job_spec(
        name="x" * 70, namespace="ml", uid=UID, spec=spec, default_trainer_image="unused"
    )
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["app.kubernetes.io/name"] == "llm-finetune"
        assert labels["app.kubernetes.io/managed-by"] == "carbonaware-operator"
        assert labels["app.kubernetes.io/part-of"] == "carbonaware"
        assert labels["app.kubernetes.io/instance"] == "x" * 63  # a label value's limit


def test_log_metadata_carries_the_run_segments_the_plot_shades() -> None:
    from carbonaware.core.intensity_log import IntensityLog
    from carbonaware.plotting import run_segments

    later = NOW + timedelta(hours=2)
    segments = builders.close_segment(builders.open_segment(None, NOW), later)
    segments = builders.open_segment(segments, later + timedelta(hours=5))
    status = {"phase": "Running", "startedAt": "2026-01-01T12:00:00Z", "segments": segments}
    spec = parse_spec({"zone": "GB", "trainer": {}, "interruptible": True})
    log = IntensityLog()
    log.update(builders.build_log_metadata(spec, status))
    stored = IntensityLog.from_csv(log.to_csv()).metadata
    assert run_segments(stored) == [(NOW, later), (later + timedelta(hours=5), None)]
