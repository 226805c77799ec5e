"""Training across pods, operator side: which specs can work, the Indexed Job and its
rendezvous Service (pure builders), and the job's figures from every rank's real report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from carbonaware.core.distributed import (
    READ_WRITE_MANY,
    RankReport,
    combine_rank_reports,
    distributed_spec_problem,
)
from carbonaware.core.workload_report import is_measured, parse_report
from carbonaware.kube import builders, job_results
from carbonaware.kube import builders_distributed as distributed
from carbonaware.kube.models import SpecError, parse_spec
from hypothesis import given
from hypothesis import strategies as st
from trainer_ranks import finish_ranks, start_ranks

UID = "0b6c2b8e-6c55-4a7e-9d7b-2f0d5b3f1a11"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MODES = st.lists(
    st.sampled_from(["ReadWriteOnce", "ReadOnlyMany", READ_WRITE_MANY, "ReadWriteOncePod"]),
    unique=True,
)


def _job(workers: int, **spec_extra):
    spec = parse_spec({"zone": "DE", "trainer": {"epochs": 2, "workers": workers}, **spec_extra})
    return spec, distributed.build_distributed_job_spec(
        name="mnist", namespace="ml", uid=UID, spec=spec, default_trainer_image="trainer:dev"
    )


# --- which specs can work ---------------------------------------------------------------


def test_an_interruptible_job_of_several_ranks_without_a_checkpoint_volume_is_refused() -> None:
    problem = distributed_spec_problem(2, interruptible=True, checkpoint_claim=None,
                                       claim_access_modes=None)  # fmt: skip
    assert problem is not None and "checkpointVolume" in problem
    with pytest.raises(SpecError, match=r"workers is 2 and the job is interruptible"):
        parse_spec({"zone": "DE", "interruptible": True, "trainer": {"workers": 2}})


def test_a_read_write_once_checkpoint_claim_is_refused_with_its_modes() -> None:
    problem = distributed_spec_problem(3, True, "ckpt", ("ReadWriteOnce",))
    assert problem == (
        "spec.trainer.workers is 3, so pods on different nodes all mount the checkpoint "
        "volume: PersistentVolumeClaim ckpt must be ReadWriteMany (its access modes: "
        "ReadWriteOnce)"
    )
    assert distributed_spec_problem(3, True, "ckpt", (READ_WRITE_MANY,)) is None


@given(
    workers=st.integers(1, 64),
    interruptible=st.booleans(),
    claim=st.one_of(st.none(), st.just("ckpt")),
    modes=st.one_of(st.none(), MODES.map(tuple)),
)
def test_refused_exactly_when_the_ranks_cannot_share_the_checkpoint(
    workers, interruptible, claim, modes
) -> None:
    problem = distributed_spec_problem(workers, interruptible, claim, modes)
    cannot = workers > 1 and (
        (interruptible and claim is None)
        or (claim is not None and modes is not None and READ_WRITE_MANY not in modes)
    )
    assert (problem is not None) == cannot


def test_the_claims_access_modes_come_from_its_bound_volume_else_its_request() -> None:
    requested = {"spec": {"accessModes": ["ReadWriteOnce"]}}
    bound = {**requested, "status": {"accessModes": ["ReadWriteMany"]}}
    assert distributed.claim_access_modes(requested) == ("ReadWriteOnce",)
    assert distributed.claim_access_modes(bound) == ("ReadWriteMany",)
    assert distributed.claim_access_modes(None) is None


# --- the Indexed Job and its rendezvous ---------------------------------------------------


def test_one_worker_is_exactly_the_single_pod_job() -> None:
    spec, job = _job(1)
    assert job == builders.build_job_spec(
        name="mnist", namespace="ml", uid=UID, spec=spec, default_trainer_image="trainer:dev"
    )
    assert "completionMode" not in job["spec"]


def test_several_workers_are_an_indexed_job_that_meets_at_rank_0() -> None:
    _, job = _job(3, interruptible=False)
    assert job["metadata"]["name"] == builders.job_name("mnist", UID)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    container = spec["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    service = distributed.build_rendezvous_service(name="mnist", namespace="ml", uid=UID)
    assert env["WORLD_SIZE"] == "3"
    assert env["MASTER_ADDR"] == service["metadata"]["name"]
    assert env["MASTER_PORT"] == str(distributed.RENDEZVOUS_PORT)
    assert container["ports"][0]["containerPort"] == distributed.RENDEZVOUS_PORT
    # The rank comes from Kubernetes (JOB_COMPLETION_INDEX), never from the operator.
    assert "RANK" not in env and "JOB_COMPLETION_INDEX" not in env


def test_the_rendezvous_service_is_headless_owned_and_selects_rank_0_only() -> None:
    service = distributed.build_rendezvous_service(name="mnist", namespace="ml", uid=UID)
    spec = service["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    assert spec["selector"] == {
        "batch.kubernetes.io/job-name": builders.job_name("mnist", UID),
        "batch.kubernetes.io/job-completion-index": "0",
    }
    assert service["metadata"]["ownerReferences"] == [builders.owner_reference("mnist", UID)]


@given(name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,70}[a-z0-9])?", fullmatch=True))
def test_the_service_name_is_a_dns_1035_label_for_any_job_name(name: str) -> None:
    _assert_service_name_fits(name)


def test_the_service_name_of_the_longest_job_name_fits() -> None:
    _assert_service_name_fits("9" + "a-" * 125 + "z")  # 253 characters, starts with a digit


def _assert_service_name_fits(name: str) -> None:
    service_name = distributed.rendezvous_service_name(name, UID)
    assert DNS_1035.match(service_name) and len(service_name) <= 63
    assert service_name != distributed.rendezvous_service_name(name, UID.replace("0", "1"))


def test_suspend_passes_through_to_the_indexed_job() -> None:
    spec = parse_spec(
        {
            "zone": "DE",
            "interruptible": True,
            "trainer": {"workers": 2, "checkpointVolume": {"claimName": "shared"}},
        }
    )
    job = distributed.build_distributed_job_spec(
        name="mnist", namespace="ml", uid=UID, spec=spec, default_trainer_image="t",
        suspend=True,
    )  # fmt: skip
    assert job["spec"]["suspend"] is True and job["spec"]["completionMode"] == "Indexed"
    pod = job["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == ["shared"]


# --- the job's figures from its ranks' reports ----------------------------------------------


reports = st.lists(
    st.builds(
        RankReport,
        rank=st.integers(0, 63),
        energy_kwh=st.floats(0, 10),
        energy_method=st.sampled_from(["measured:rapl", "estimated:cpu-time×10W/core"]),
        duration_seconds=st.floats(0, 1e5),
        accuracy=st.floats(0, 1),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda report: report.rank,
)


@given(reports)
def test_the_jobs_energy_is_the_sum_of_its_ranks_and_its_time_the_longest(parts) -> None:
    job = combine_rank_reports(parts)
    assert job.ranks_reported == len(parts)
    assert job.energy_kwh == pytest.approx(sum(p.energy_kwh for p in parts))
    assert job.duration_seconds == max(p.duration_seconds for p in parts)
    assert job.accuracy == min(parts, key=lambda p: p.rank).accuracy
    methods = {p.energy_method for p in parts}
    assert (job.energy_method == "measured:rapl") == (methods == {"measured:rapl"})


def test_a_rank_without_energy_leaves_the_jobs_energy_unknown() -> None:
    parts = [RankReport(0, 0.1, "measured:rapl", 10, 0.9), RankReport(1, None, None, 9, None)]
    assert combine_rank_reports(parts).energy_kwh is None


def _pod(message: str, index: int | None, finished: str) -> dict:
    labels = {} if index is None else {distributed.COMPLETION_INDEX_LABEL: str(index)}
    return {
        "metadata": {"labels": labels},
        "status": {
            "containerStatuses": [
                {
                    "name": builders.TRAINER_CONTAINER,
                    "state": {"terminated": {"message": message, "finishedAt": finished}},
                }
            ]
        },
    }


@pytest.mark.slow
def test_the_operator_adds_up_what_two_real_ranks_report(tmp_path: Path, mnist_dir: Path):
    args = ["--data-dir", str(mnist_dir), "--max-samples", "256", "--eval-samples", "100",
            "--batch-size", "64", "--epochs", "1", "--log-every", "0"]  # fmt: skip
    ranks = finish_ranks(start_ranks(args, tmp_path))
    assert [code for code, _, _ in ranks] == [0, 0], ranks
    finals = [final for _, final, _ in ranks]
    # What each pod's termination message holds: the rank's own final line.
    pods = [_pod(json.dumps(final), final["rank"], f"2026-01-01T00:00:0{i}Z")
            for i, final in enumerate(finals)]  # fmt: skip
    ranks_read = distributed.trainer_result_of_ranks(pods)
    assert ranks_read is not None
    report, ranks_reported = ranks_read
    assert ranks_reported == 2
    assert report.energy_kwh == pytest.approx(sum(final["energy_kwh"] for final in finals))
    assert report.wall_seconds == max(final["wall_seconds"] for final in finals)
    assert report.accuracy == finals[0]["accuracy"]
    # Both ranks measured (or both estimated) alike: the sum says so, under the one label.
    labels = {final["energy_method"] for final in finals}
    assert report.energy_label == "+".join(sorted(labels))
    assert report.energy_measured == all(is_measured(label) for label in labels)
    status = job_results.build_trainer_status(report, ranks_reported)
    assert status["ranksReported"] == 2 and status["energyKWh"] == report.energy_kwh
    assert "rank" not in status

    # A plain Job's pods (no completion index): the latest report, one rank, as before.
    plain = distributed.trainer_result_of_ranks(
        [_pod(json.dumps(finals[1]), None, "2026-01-01T00:00:09Z"),
         _pod(json.dumps(finals[0]), None, "2026-01-01T00:00:01Z")]
    )  # fmt: skip
    assert plain is not None and plain.ranks_reported == 1
    assert plain.report == parse_report(json.dumps(finals[1]))


def test_a_sum_is_measured_only_if_every_rank_measured() -> None:
    def rank_pod(rank: int, method: str) -> dict:
        final = {"energy_kwh": 0.001 * (rank + 1), "energy_method": method, "wall_seconds": 5}
        return _pod(json.dumps(final), rank, "2026-01-01T00:00:00Z")

    mixed = distributed.trainer_result_of_ranks(
        [rank_pod(0, "measured:rapl-package"), rank_pod(1, "estimated:cpu-time×10W/core")]
    )
    assert mixed is not None and mixed.ranks_reported == 2
    assert mixed.report.energy_kwh == pytest.approx(0.003)
    assert mixed.report.energy_label == "estimated:cpu-time×10W/core+measured:rapl-package"
    assert not mixed.report.energy_measured
    both = distributed.trainer_result_of_ranks(
        [rank_pod(0, "measured:rapl-package"), rank_pod(1, "measured:rapl-package")]
    )
    assert both is not None and both.report.energy_label == "measured:rapl-package"
    assert both.report.energy_measured


def test_no_report_from_any_rank_is_no_result() -> None:
    assert distributed.trainer_result_of_ranks([_pod("not json", 0, "x")]) is None
    assert distributed.trainer_result_of_ranks([]) is None
