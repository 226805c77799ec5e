"""Typed views of a CarbonAwareJob's spec and status (pydantic, camelCase on the wire).

The CRD schema (manifests/crd.yaml) is the first line of validation and applies the
defaults; these models parse what the apiserver accepted into Python types (durations
become timedeltas) and are the second line for anything that slips past (an object stored
before a schema change, a CRD installed without its rules).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from carbonaware.core.distributed import distributed_spec_problem
from carbonaware.core.durations import DurationError, parse_duration

ProviderName = Literal["electricitymaps", "ukci", "watttime", "replay", "static"]
PHASES = ("Pending", "Waiting", "Running", "Succeeded", "Failed")
TERMINAL_PHASES = ("Succeeded", "Failed")

Phase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed"]


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class SpecError(ValueError):
    """A spec the operator cannot run; the message is one line a person understands."""


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,
    )


class SecretRef(_Camel):
    name: str
    key: str = "token"


class ProviderSource(_Camel):
    """One provider: its name and the settings that provider takes."""

    name: ProviderName
    secret_ref: SecretRef | None = None
    base_url: str | None = None
    basis: Literal["direct", "lifecycle"] | None = None
    trace: str | None = None
    speed: float | None = Field(default=None, gt=0)
    start: str | None = None  # replay: ISO time in the trace or an offset ("36h")
    value: float | None = Field(default=None, ge=0)


class ProviderSpec(ProviderSource):
    """The job's provider (``name`` None: the operator's default) and its fallbacks."""

    name: ProviderName | None = None
    fallback: tuple[ProviderSource, ...] = ()


class PowerSpec(_Camel):
    watts: float = Field(default=150.0, gt=0)
    pue: float = Field(default=1.2, ge=1.0)


class DataVolume(_Camel):
    claim_name: str


class CheckpointVolume(_Camel):
    """A PersistentVolumeClaim for the trainer's checkpoints: an interruptible job's pods
    come and go, and each new one resumes from what the last one saved there."""

    claim_name: str


class TrainerSpec(_Camel):
    image: str | None = None
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float | None = Field(default=None, gt=0)
    max_samples: int | None = Field(default=None, ge=1)
    data_volume: DataVolume | None = None
    checkpoint_volume: CheckpointVolume | None = None
    resources: dict[str, dict[str, Any]] | None = None
    # Placement, passed through to the pod as-is (e.g. GPU nodes and their taints).
    node_selector: dict[str, str] | None = None
    tolerations: tuple[dict[str, Any], ...] | None = None
    backoff_limit: int = Field(default=0, ge=0)
    # Data-parallel ranks, one pod each (an Indexed Job; core/distributed.py says what works).
    workers: int = Field(default=1, ge=1, le=64)


class PlacementSpec(_Camel):
    """One candidate placement: a grid zone and the pod placement that puts the job there."""

    zone: str = Field(min_length=1)
    provider: ProviderSpec | None = None  # None: the job's spec.provider
    node_selector: dict[str, str] | None = None
    tolerations: tuple[dict[str, Any], ...] | None = None
    node_affinity: dict[str, Any] | None = None
    # Energy the job uses here relative to the first placement (core/placement.py).
    power_scale: float = Field(default=1.0, gt=0, le=10)


class CarbonAwareJobSpec(_Camel):
    # Exactly one of zone or placements; after parse_spec, zone is the first placement's.
    zone: str | None = Field(default=None, min_length=1)
    placements: tuple[PlacementSpec, ...] | None = Field(default=None, min_length=1, max_length=8)
    provider: ProviderSpec = ProviderSpec()
    threshold_grams_per_kwh: float = Field(default=200.0, gt=0, alias="thresholdGramsPerKWh")
    max_delay: Duration = timedelta(hours=24)
    strategy: Literal["threshold", "forecast"] = "threshold"
    expected_duration: Duration = timedelta(minutes=30)
    poll_interval: Duration = timedelta(minutes=5)
    power: PowerSpec = PowerSpec()
    trainer: TrainerSpec | None = None
    job_template: dict[str, Any] | None = None
    # Suspend the Job while the grid is dirty and resume it later (see core/interruptible.py).
    interruptible: bool = False

    def candidates(self) -> tuple[PlacementSpec, ...]:
        """The placements the job may run in (a single ``zone``: one, with no pod placement)."""
        if self.placements:
            return self.placements
        if self.zone is None:  # parse_spec refuses a spec with neither zone nor placements
            raise SpecError("set exactly one of spec.zone or spec.placements")
        return (PlacementSpec(zone=self.zone),)

    def provider_for(self, placement: PlacementSpec) -> ProviderSpec:
        """The provider that reads ``placement``'s zone: its own, else the job's."""
        return placement.provider or self.provider


def parse_spec(raw: dict[str, Any]) -> CarbonAwareJobSpec:
    """Parse a spec dict; raise SpecError with one readable line on bad input."""
    try:
        spec = CarbonAwareJobSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        raise SpecError(f"spec.{where}: {first['msg']}") from None
    if (spec.trainer is None) == (spec.job_template is None):
        raise SpecError("set exactly one of spec.trainer or spec.jobTemplate")
    if (spec.zone is None) == (spec.placements is None):
        raise SpecError("set exactly one of spec.zone or spec.placements")
    if spec.placements:
        for i, placement in enumerate(spec.placements):
            if not (placement.node_selector or placement.node_affinity or placement.tolerations):
                raise SpecError(
                    f"spec.placements.{i}: needs a nodeSelector, nodeAffinity or tolerations "
                    "that put the pods in its zone"
                )
        if spec.interruptible:
            raise SpecError(
                "spec.interruptible with spec.placements is not supported yet: a paused job "
                "must resume where its checkpoints are; use one zone"
            )
        spec = spec.model_copy(update={"zone": spec.placements[0].zone})
    if spec.trainer is not None:
        # What the spec alone shows; the claim's access modes are checked where it is read.
        claim = spec.trainer.checkpoint_volume
        problem = distributed_spec_problem(
            spec.trainer.workers, spec.interruptible, claim and claim.claim_name, None
        )
        if problem:
            raise SpecError(problem)
    return spec


class Condition(_Camel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class Decision(_Camel):
    action: str
    reason: str
    planned_start: str | None = None
    forecast_source: str | None = None


class PlacementStatus(_Camel):
    """Where the job runs (spec.placements), why, and the forecast's promise (kube/placement.py)."""

    index: int | None = None
    zone: str | None = None
    reason: str | None = None
    forecast_saving_vs_default_now_percent: float | None = None
    forecast_saving_vs_default_best_start_percent: float | None = None
    unschedulable: tuple[str, ...] | None = None
    fell_back: str | None = None


class Segment(_Camel):
    """One stretch the Job ran, on the job's clock; ``end`` None while it still runs."""

    start: str
    end: str | None = None


class TrainerResult(_Camel):
    """``status.trainer``: the trainer's final report (core/workload_report.py) as stored."""

    accuracy: float | None = None
    epochs: int | None = None
    duration_seconds: float | None = None  # the report's wall_seconds
    device: str | None = None
    energy_kwh: float | None = Field(default=None, alias="energyKWh")
    # The trainer's label as it wrote it, e.g. "measured:rapl-package" (see workload_report).
    energy_method: str | None = None
    # Training across pods (kube/builders_distributed.py): how many ranks' reports the job's
    # figures add up.
    ranks_reported: int | None = None


class EnergySource(_Camel):
    """One source's share of a job's energy (kube/job_energy.py), e.g. measured:dcgm."""

    source: str
    energy_kwh: float = Field(alias="energyKWh")


class CarbonAwareJobStatus(_Camel):
    """The status the operator writes (kube/status.build_status puts every write through it);
    every field optional so a partial status parses. A field the model does not know is not
    written (add it here first)."""

    phase: Phase | None = None
    message: str | None = None
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] | None = None
    clock: Literal["wall", "replay"] | None = None
    submitted_at: str | None = None
    deadline: str | None = None
    current_intensity: float | None = None
    last_reading_time: str | None = None
    reading_provider: str | None = None
    reading_basis: str | None = None
    reading_count: int | None = None
    forecaster_history: str | None = None  # what the own forecaster was seeded with
    decision: Decision | None = None
    started_at: str | None = None
    completed_at: str | None = None
    waited_seconds: float | None = None
    job_name: str | None = None
    log_config_map: str | None = Field(default=None, alias="logConfigMap")
    energy_kwh: float | None = Field(default=None, alias="energyKWh")
    energy_method: str | None = None
    energy_sources: tuple[EnergySource, ...] | None = None
    emissions_grams: float | None = None
    baseline_emissions_grams: float | None = None
    saved_grams: float | None = None
    saved_percent: float | None = None
    emissions_basis: str | None = None
    trainer: TrainerResult | None = None
    segments: tuple[Segment, ...] | None = None
    placement: PlacementStatus | None = None

    def wire(self) -> dict[str, Any]:
        """The camelCase dict as stored in the object (unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def parse_status(raw: dict[str, Any] | None) -> CarbonAwareJobStatus:
    """Parse a stored status, ignoring what does not fit (it is our own output)."""
    try:
        return CarbonAwareJobStatus.model_validate(raw or {})
    except ValidationError:
        return CarbonAwareJobStatus()
