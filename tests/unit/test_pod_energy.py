"""The power model and the energy-source ranking (core/pod_energy.py)."""

from __future__ import annotations

import pytest
from carbonaware.core.pod_energy import (
    CCF_CORE_WATTS,
    CCF_DEFAULT,
    JOULES_PER_KWH,
    CoreWatts,
    PodUsage,
    PowerModel,
    choose_energy,
    family_of,
    kubelet_figure,
    model_for,
    pod_joules,
    prometheus_figure,
)
from carbonaware.core.workload_report import is_measured
from hypothesis import given
from hypothesis import strategies as st

seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
cores = st.floats(min_value=0, max_value=256, allow_nan=False)
usages = st.builds(
    PodUsage,
    pod=st.sampled_from(["job-0-a", "job-1-b", "job-0-c"]),
    core_seconds=seconds,
    wall_seconds=seconds,
    requested_cores=cores,
    memory_gb=st.floats(min_value=0, max_value=512, allow_nan=False),
)


def test_two_pods_burning_twenty_core_seconds_each_follow_the_ccf_formula():
    model = PowerModel(CoreWatts(1.0, 4.0), memory_w_per_gb=0.5, name="test")
    pods = [PodUsage(f"p{i}", 20.0, 25.0, requested_cores=1.0, memory_gb=0.25) for i in (0, 1)]
    figure = kubelet_figure(pods, model)
    # idle 1 W × 25 held core-s + 3 W × 20 busy core-s + 0.5 W/GB × 0.25 GB × 25 s, twice
    assert figure.kwh * JOULES_PER_KWH == pytest.approx(2 * (25 + 60 + 3.125))
    assert figure.label.startswith("estimated:kubelet-cpu (2 pods, 40.0 core-s) × test 1-4 W/core")
    assert not is_measured(figure.label)


@given(usages, usages)
def test_more_cpu_time_never_costs_less_energy(a, b):
    model = PowerModel()
    more = PodUsage(
        a.pod, a.core_seconds + b.core_seconds, a.wall_seconds, a.requested_cores, a.memory_gb
    )
    assert pod_joules(more, model) >= pod_joules(a, model) - 1e-6


@given(st.lists(usages, min_size=1, max_size=12))
def test_every_pod_run_counts_retries_and_segments_included(runs):
    model = PowerModel()
    figure = kubelet_figure(runs, model)
    assert figure.kwh * JOULES_PER_KWH == pytest.approx(sum(pod_joules(u, model) for u in runs))
    assert sum(figure.per_pod_joules.values()) == pytest.approx(figure.kwh * JOULES_PER_KWH)
    assert set(figure.per_pod_joules) == {u.pod for u in runs}


@given(usages)
def test_a_busy_pod_is_bounded_by_idle_and_busy_watts_per_core(u):
    model = PowerModel(memory_w_per_gb=0)
    held = max(u.requested_cores * u.wall_seconds, u.core_seconds)
    assert model.core.idle * held - 1e-6 <= pod_joules(u, model)
    assert pod_joules(u, model) <= model.core.busy * held + 1e-6


def test_cpu_models_map_to_ccf_families_and_overrides_win():
    assert family_of("Intel(R) Xeon(R) Platinum 8259CL (Cascade Lake)") == "cascade lake"
    assert family_of("AMD EPYC 7B13 64-Core Processor") == "epyc 3rd gen"
    assert family_of("AMD EPYC 7R32") == "epyc 2nd gen"
    assert family_of("Some Unknown CPU") is None
    assert model_for("AMD EPYC 7763").core == CCF_CORE_WATTS["epyc 3rd gen"]
    assert model_for(None).core == CCF_DEFAULT and model_for(None).name == "ccf-average"
    mine = CoreWatts(2.0, 9.0)
    assert model_for("AMD EPYC 7763", {"EPYC 3rd Gen": mine}).core == mine
    assert model_for("Unknown", {"default": mine}).name == "override:default"


def test_bad_coefficients_are_refused():
    with pytest.raises(ValueError):
        CoreWatts(5.0, 1.0)
    with pytest.raises(ValueError):
        PowerModel(memory_w_per_gb=-1)
    with pytest.raises(ValueError):
        PodUsage("p", float("nan"), 1.0)


KUBELET = kubelet_figure([PodUsage("p0", 10.0, 10.0)], PowerModel())
KEPLER = prometheus_figure("kepler", {"p0": 900.0, "p1": 900.0})
DCGM = prometheus_figure("dcgm", {"p0": 3600.0})


def test_the_workload_report_wins_alone():
    choice = choose_energy((0.002, "measured:rapl"), [KEPLER, DCGM], KUBELET)
    assert choice.label == "measured:rapl" and choice.kwh == 0.002


def test_kepler_and_dcgm_add_up_with_a_split_and_the_kubelet_estimate_is_not_needed():
    choice = choose_energy(None, [KEPLER, DCGM], KUBELET)
    assert choice.label == "measured:kepler+measured:dcgm" and is_measured(choice.label)
    assert choice.kwh == pytest.approx((1800 + 3600) / JOULES_PER_KWH)
    assert [label for label, _ in choice.split] == ["measured:kepler", "measured:dcgm"]
    assert choice.per_pod_joules == {"p0": 4500.0, "p1": 900.0}


def test_dcgm_alone_takes_the_cpu_side_from_the_kubelet_and_says_it_is_estimated():
    choice = choose_energy(None, [DCGM], KUBELET)
    assert choice.label.startswith("measured:dcgm+estimated:kubelet-cpu (1 pod, 10.0 core-s)")
    assert not is_measured(choice.label) and len(choice.split) == 2
    assert choice.kwh == pytest.approx(DCGM.kwh + KUBELET.kwh)


def test_only_spec_power_remains_when_no_source_has_data():
    assert choose_energy(None, [prometheus_figure("kepler", {})], None) is None
    assert choose_energy(None, [], KUBELET).label == KUBELET.label
