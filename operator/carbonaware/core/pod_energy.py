"""Energy of any workload from what its pods used, and which source each figure came from.

Sources, best first (docs/accounting.md explains each and its error bars):

1. **The workload's own report** (core/workload_report.py): the bundled trainer's RAPL/NVML
   figure, or any container writing the same JSON to its termination message. Used alone.
2. **Prometheus energy counters** (kube/prom_energy.py): Kepler's per-container joules
   (``measured:kepler``) and DCGM's per-GPU joules (``measured:dcgm``), each ``increase()``d
   over every pod of the Job and every run segment. Kepler covers the CPU/DRAM side and DCGM
   the GPU side, so both add up; with DCGM alone the CPU side comes from source 3.
3. **The pods' CPU time from the kubelet** (kube/pod_usage.py) × :class:`PowerModel`:
   estimated, labelled ``estimated:kubelet-cpu (2 pods, 41.3 core-s) × <model>``.
4. ``spec.power.watts`` × wall time (core/accounting.estimate_energy), only when none of the
   above exists.

The power model is Cloud Carbon Footprint's (CCF): per vCPU, an idle (``min``) and a
fully-busy (``max``) figure by CPU microarchitecture, measured by SPECpower and published
in CCF's methodology (https://www.cloudcarbonfootprint.org/docs/methodology/, coefficients
from https://github.com/cloud-carbon-footprint/ccf-coefficients, AWS table), plus
0.392 W per GB of memory (CCF's memory coefficient). CCF's formula per vCPU is
``min + utilisation × (max − min)``; here, per pod, the idle share is charged for the cores
the pod held (its CPU request, or what it used if more) over its wall time, and the busy
share for the core-seconds it really used::

    J = min_w × held_core_s + (max_w − min_w) × used_core_s + mem_w_per_gb × gb × wall_s

Every pod counts: parallel and Indexed Jobs' pods, retried pods, and each run segment of a
suspended-and-resumed Job (each segment has its own pods).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

JOULES_PER_KWH = 3_600_000.0


@dataclass(frozen=True)
class CoreWatts:
    """Watts per vCPU when idle and when fully busy."""

    idle: float
    busy: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.idle) and math.isfinite(self.busy)):
            raise ValueError("core watts must be finite")
        if not 0 <= self.idle <= self.busy:
            raise ValueError(f"need 0 <= idle <= busy W/core, got {self.idle}, {self.busy}")


# CCF's AWS coefficients (min/max W per vCPU, SPECpower-derived) by microarchitecture; the
# key is matched case-insensitively against the node's CPU model name (see family_of).
CCF_CORE_WATTS: dict[str, CoreWatts] = {
    "cascade lake": CoreWatts(0.64, 3.97),
    "skylake": CoreWatts(0.65, 4.26),
    "broadwell": CoreWatts(0.71, 3.69),
    "haswell": CoreWatts(1.00, 4.74),
    "coffee lake": CoreWatts(1.14, 5.42),
    "sandy bridge": CoreWatts(2.17, 8.58),
    "ivy bridge": CoreWatts(3.04, 8.25),
    "epyc 1st gen": CoreWatts(0.82, 2.55),
    "epyc 2nd gen": CoreWatts(0.47, 1.69),
    "epyc 3rd gen": CoreWatts(0.45, 1.87),
    "graviton": CoreWatts(0.47, 1.69),
}
# CCF's average over AWS's microarchitectures, for a CPU it cannot place.
CCF_DEFAULT = CoreWatts(0.74, 3.5)
CCF_MEMORY_W_PER_GB = 0.392


def family_of(cpu_model: str) -> str | None:
    """The CCF family a CPU model name belongs to, None when it cannot be told."""
    name = " ".join(cpu_model.lower().split())
    for family in CCF_CORE_WATTS:
        if family in name:
            return family
    if "epyc" in name:
        for word in name.split():
            if len(word) == 4 and word[0] == "7" and word[3].isdigit():  # 7xx1, 7xx2, 7xx3
                return {"1": "epyc 1st gen", "2": "epyc 2nd gen", "3": "epyc 3rd gen"}.get(word[3])
    return None


@dataclass(frozen=True)
class PowerModel:
    """Watts per core (idle and busy) and per GB of memory; ``name`` goes in the label."""

    core: CoreWatts = CCF_DEFAULT
    memory_w_per_gb: float = CCF_MEMORY_W_PER_GB
    name: str = "ccf-average"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.memory_w_per_gb) and self.memory_w_per_gb >= 0):
            raise ValueError(f"memory W/GB must be >= 0, got {self.memory_w_per_gb}")

    @property
    def label(self) -> str:
        return (
            f"{self.name} {self.core.idle:g}-{self.core.busy:g} W/core"
            f", {self.memory_w_per_gb:g} W/GB"
        )


def model_for(
    cpu_model: str | None,
    overrides: Mapping[str, CoreWatts] | None = None,
    memory_w_per_gb: float = CCF_MEMORY_W_PER_GB,
) -> PowerModel:
    """The power model for a node's CPU: the operator's override for its family (or
    ``"default"``), else CCF's figure, else CCF's average."""
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    family = family_of(cpu_model) if cpu_model else None
    if family is not None and family in overrides:
        return PowerModel(overrides[family], memory_w_per_gb, f"override:{family}")
    if family is not None:
        return PowerModel(CCF_CORE_WATTS[family], memory_w_per_gb, f"ccf:{family}")
    if "default" in overrides:
        return PowerModel(overrides["default"], memory_w_per_gb, "override:default")
    return PowerModel(CCF_DEFAULT, memory_w_per_gb, "ccf-average")


@dataclass(frozen=True)
class PodUsage:
    """What one pod (one run of it: a retry or a later segment is another) used."""

    pod: str
    core_seconds: float  # cumulative CPU time of its containers (usageCoreNanoSeconds / 1e9)
    wall_seconds: float  # how long it ran
    requested_cores: float = 0.0  # its CPU request; the idle share is charged for these
    memory_gb: float = 0.0  # its memory (working set, or request) while it ran

    def __post_init__(self) -> None:
        for name in ("core_seconds", "wall_seconds", "requested_cores", "memory_gb"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def pod_joules(usage: PodUsage, model: PowerModel) -> float:
    """One pod's energy under the model (the formula in the module's docstring)."""
    held = max(usage.requested_cores * usage.wall_seconds, usage.core_seconds)
    cpu = model.core.idle * held + (model.core.busy - model.core.idle) * usage.core_seconds
    return cpu + model.memory_w_per_gb * usage.memory_gb * usage.wall_seconds


@dataclass(frozen=True)
class SourceFigure:
    """One source's IT energy for the Job: its label, kWh and per-pod joules."""

    label: str
    kwh: float
    per_pod_joules: Mapping[str, float] = field(default_factory=dict)


def kubelet_figure(usages: Sequence[PodUsage], model: PowerModel) -> SourceFigure | None:
    """The kubelet-CPU estimate over every pod (None when no pod was sampled)."""
    if not usages:
        return None
    per_pod: dict[str, float] = {}
    for usage in usages:
        per_pod[usage.pod] = per_pod.get(usage.pod, 0.0) + pod_joules(usage, model)
    core_s = sum(u.core_seconds for u in usages)
    pods = len({u.pod for u in usages})
    label = (
        f"estimated:kubelet-cpu ({pods} pod{'s' if pods != 1 else ''}, {core_s:.1f} core-s)"
        f" × {model.label}"
    )
    return SourceFigure(label, sum(per_pod.values()) / JOULES_PER_KWH, per_pod)


def prometheus_figure(source: str, per_pod_joules: Mapping[str, float]) -> SourceFigure | None:
    """A measured figure from a Prometheus counter (``source``: ``kepler`` or ``dcgm``);
    None when no pod of the Job had a series."""
    clean = {pod: j for pod, j in per_pod_joules.items() if math.isfinite(j) and j >= 0}
    if not clean:
        return None
    return SourceFigure(f"measured:{source}", sum(clean.values()) / JOULES_PER_KWH, clean)


@dataclass(frozen=True)
class EnergyChoice:
    """The Job's IT energy (before PUE), its label and, when several sources added up, the
    split (label, kWh) per source."""

    kwh: float
    label: str
    split: tuple[tuple[str, float], ...] = ()
    per_pod_joules: Mapping[str, float] = field(default_factory=dict)


CPU_SIDE = ("kepler",)  # sources that cover the CPU and memory; "dcgm" covers GPUs only


def choose_energy(
    report: tuple[float, str] | None = None,
    prometheus: Iterable[SourceFigure] = (),
    kubelet: SourceFigure | None = None,
) -> EnergyChoice | None:
    """The best energy figure for a Job, or None when only ``spec.power`` remains.

    ``report``: the workload's own (kWh, label). ``prometheus``: the measured figures by
    source. ``kubelet``: the CPU-time estimate. The report wins alone. Otherwise the measured
    figures add up (Kepler's CPU side + DCGM's GPU side), and when none covers the CPU side
    the kubelet estimate is added for it; the split lists each part.
    """
    if report is not None:
        kwh, label = report
        return EnergyChoice(kwh, label, ((label, kwh),))
    parts = [figure for figure in prometheus if figure is not None]
    if not any(p.label.split(":", 1)[1] in CPU_SIDE for p in parts) and kubelet is not None:
        parts.append(kubelet)
    if not parts:
        return None
    per_pod: dict[str, float] = {}
    for part in parts:
        for pod, joules in part.per_pod_joules.items():
            per_pod[pod] = per_pod.get(pod, 0.0) + joules
    split = tuple((p.label, p.kwh) for p in parts)
    label = "+".join(p.label for p in parts)
    return EnergyChoice(sum(p.kwh for p in parts), label, split, per_pod)
