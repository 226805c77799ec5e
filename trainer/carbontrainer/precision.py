"""Training precision: fp32 or bf16 autocast, chosen on a CPU by timing both at start.

Which one is faster depends on the CPU and on torch, not only on the CPU's flags: on a Zen 4
machine (AVX512-BF16) bf16 trained 2.27x the textbook loop's speed and fp32 about half that,
while on an Intel Xeon with AVX512-BF16 the same bf16 autocast was 22 % slower than fp32
(docs/benchmarks.md). So the trainer times a few real training steps of its model at its batch
size in each precision (well under a second) and keeps the faster one. `--amp` / `--no-amp`
force bf16 / fp32 without timing. On CUDA the rule stays: bf16 where the GPU supports it,
else fp16 with a grad scaler.

No cache: the timing costs a fraction of a second of a run that lasts minutes, and each pod
starts on a fresh filesystem where a cache would not survive anyway.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import MnistNet

# bf16 must beat fp32 by this fraction of fp32's step time to be chosen: a tie within the
# timing's noise keeps fp32, the more precise one.
BF16_MIN_GAIN = 0.05
WARM_STEPS = 1
TIMED_STEPS = 3


@dataclass(frozen=True)
class Precision:
    """Autocast settings: None trains in fp32; a dtype autocasts to it."""

    autocast_dtype: torch.dtype | None
    needs_grad_scaler: bool

    @property
    def label(self) -> str:
        return "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).split(".")[-1]


FP32 = Precision(None, False)
BF16 = Precision(torch.bfloat16, False)  # fp32's exponent range: no grad scaler needed


@dataclass(frozen=True)
class StepTimings:
    """Seconds per training step measured here; bf16 None where bf16 autocast cannot run."""

    fp32_seconds: float
    bf16_seconds: float | None


@dataclass(frozen=True)
class PrecisionChoice:
    precision: Precision
    # "measured" | "forced by --amp" | "forced by --no-amp" | "kept from the checkpoint" |
    # "cuda rule"
    how: str
    timings: StepTimings | None = None

    def report(self) -> dict[str, object]:
        """The decision for the final JSON line (milliseconds per step where measured)."""
        out: dict[str, object] = {"chosen": self.precision.label, "how": self.how}
        if self.timings is not None:
            out["fp32_step_ms"] = round(self.timings.fp32_seconds * 1000, 2)
            if self.timings.bf16_seconds is not None:
                out["bf16_step_ms"] = round(self.timings.bf16_seconds * 1000, 2)
        return out

    def describe(self) -> str:
        if self.timings is None:
            return f"{self.precision.label} ({self.how})"
        bf16 = self.timings.bf16_seconds
        bf16_text = "unavailable" if bf16 is None else f"{bf16 * 1000:.1f} ms"
        return (
            f"{self.precision.label} (measured per step: fp32 "
            f"{self.timings.fp32_seconds * 1000:.1f} ms, bf16 {bf16_text})"
        )


def faster_cpu_precision(timings: StepTimings, min_gain: float = BF16_MIN_GAIN) -> Precision:
    """bf16 where it measured at least `min_gain` faster than fp32, else fp32."""
    bf16 = timings.bf16_seconds
    if bf16 is not None and bf16 <= timings.fp32_seconds * (1 - min_gain):
        return BF16
    return FP32


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX as torch sees them (reported beside the measurement, not a rule)."""
    if not torch.backends.mkldnn.is_available():
        return False
    cpu = getattr(torch, "cpu", None)  # a package of its own only in newer torch
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def autocast(device_type: str, precision: Precision):
    """The autocast context of `precision` on a device type ("cpu", "cuda"); fp32: none."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=precision.autocast_dtype)


def time_cpu_steps(
    batch_size: int, warm_steps: int = WARM_STEPS, timed_steps: int = TIMED_STEPS
) -> StepTimings:
    """Seconds per training step of MnistNet on CPU at `batch_size`, fp32 and bf16 autocast.

    A model of its own on random images (the training model and the global RNG are left
    alone), channels_last like the loop. The timed steps alternate between the precisions and
    each keeps its fastest step, so load from a neighbour hurts both alike.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 1, 28, 28, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    rng_state = torch.get_rng_state()  # model init and dropout draw from the global RNG
    model = MnistNet().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adadelta(model.parameters())

    def step(precision: Precision) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast("cpu", precision):
            output = model(images)
        F.nll_loss(output.float(), labels).backward()
        optimizer.step()
        return time.perf_counter() - start

    candidates = [FP32, BF16]
    try:
        for _ in range(warm_steps):
            step(BF16)
    except RuntimeError:  # a torch without CPU bf16 kernels for these layers
        candidates = [FP32]
    for _ in range(warm_steps):
        step(FP32)
    best = {precision.label: float("inf") for precision in candidates}
    for _ in range(timed_steps):
        for precision in candidates:
            best[precision.label] = min(best[precision.label], step(precision))
    torch.set_rng_state(rng_state)
    return StepTimings(fp32_seconds=best["fp32"], bf16_seconds=best.get("bfloat16"))


def choose_precision(
    device: torch.device, amp: bool | None, batch_size: int, kept: str | None = None
) -> PrecisionChoice:
    """amp None: measure on CPU (rule on CUDA); True: force mixed precision; False: fp32.

    `kept`: the label a checkpoint was trained in; a resumed CPU run without a flag keeps it,
    so the continued run trains as the interrupted one did.
    """
    if amp is False:
        return PrecisionChoice(FP32, "forced by --no-amp")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice(BF16, "cuda rule")
        return PrecisionChoice(Precision(torch.float16, True), "cuda rule")
    if amp is True:
        return PrecisionChoice(BF16, "forced by --amp")
    if kept in (FP32.label, BF16.label):
        return PrecisionChoice(BF16 if kept == BF16.label else FP32, "kept from the checkpoint")
    timings = time_cpu_steps(batch_size)
    return PrecisionChoice(faster_cpu_precision(timings), "measured", timings)
