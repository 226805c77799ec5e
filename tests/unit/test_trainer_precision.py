"""fp32 or bf16: the choice from measured step times (pure), and the real measurement."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from carbontrainer.cli import main
from carbontrainer.precision import (
    BF16_MIN_GAIN,
    choose_precision,
    cpu_has_native_bf16,
    faster_cpu_precision,
    time_cpu_steps,
)
from carbontrainer.precision import StepTimings as T
from hypothesis import given
from hypothesis import strategies as st

CPU = torch.device("cpu")
seconds = st.floats(min_value=1e-4, max_value=10.0, allow_nan=False)


def test_bf16_is_chosen_where_it_measured_clearly_faster() -> None:
    assert faster_cpu_precision(T(fp32_seconds=0.100, bf16_seconds=0.044)).label == "bfloat16"


def test_fp32_is_kept_where_bf16_measured_slower() -> None:
    # The Intel Xeon of issue 24: bf16 autocast 22 % slower than fp32 despite AVX512-BF16.
    assert faster_cpu_precision(T(fp32_seconds=0.060, bf16_seconds=0.076)).label == "fp32"


def test_a_tie_within_the_noise_keeps_fp32() -> None:
    assert faster_cpu_precision(T(fp32_seconds=0.100, bf16_seconds=0.097)).label == "fp32"


def test_fp32_where_bf16_could_not_run() -> None:
    assert faster_cpu_precision(T(fp32_seconds=0.100, bf16_seconds=None)).label == "fp32"


@given(fp32=seconds, bf16=seconds)
def test_the_choice_is_bf16_exactly_when_it_saves_the_minimum_gain(fp32: float, bf16: float):
    choice = faster_cpu_precision(T(fp32, bf16))
    assert (choice.label == "bfloat16") == (bf16 <= fp32 * (1 - BF16_MIN_GAIN))
    assert not choice.needs_grad_scaler


@given(fp32=seconds, bf16=seconds, scale=st.floats(min_value=0.01, max_value=100))
def test_the_choice_depends_on_the_ratio_not_on_the_machines_speed(fp32, bf16, scale) -> None:
    # A machine twice as slow for both precisions makes the same choice (up to rounding).
    ratio = bf16 / fp32
    if abs(ratio - (1 - BF16_MIN_GAIN)) > 1e-6:
        assert faster_cpu_precision(T(fp32, bf16)) == faster_cpu_precision(
            T(fp32 * scale, bf16 * scale)
        )


def test_flags_force_the_precision_without_measuring() -> None:
    forced_fp32 = choose_precision(CPU, amp=False, batch_size=128)
    forced_bf16 = choose_precision(CPU, amp=True, batch_size=128)
    assert (forced_fp32.precision.label, forced_fp32.timings) == ("fp32", None)
    assert (forced_bf16.precision.label, forced_bf16.timings) == ("bfloat16", None)
    assert forced_fp32.report() == {"chosen": "fp32", "how": "forced by --no-amp"}


def test_the_real_measurement_times_both_precisions_and_picks_the_faster() -> None:
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    choice = choose_precision(CPU, amp=None, batch_size=32)
    # The training run's random stream is untouched by the measurement's model and dropout.
    assert torch.equal(torch.rand(1), expected_next)
    timings = choice.timings
    assert choice.how == "measured" and timings is not None
    assert 0 < timings.fp32_seconds < 10
    if cpu_has_native_bf16():
        assert timings.bf16_seconds is not None and 0 < timings.bf16_seconds < 10
    assert choice.precision == faster_cpu_precision(timings)
    report = choice.report()
    assert report["chosen"] == choice.precision.label
    assert report["fp32_step_ms"] == round(timings.fp32_seconds * 1000, 2)


def test_one_warm_and_one_timed_step_give_positive_times() -> None:
    timings = time_cpu_steps(batch_size=8, warm_steps=1, timed_steps=1)
    assert timings.fp32_seconds > 0


def test_the_trainers_final_line_reports_the_measured_decision(
    mnist_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = [
        "--data-dir", str(mnist_dir), "--max-samples", "256", "--eval-samples", "256",
        "--epochs", "1", "--batch-size", "64", "--log-every", "0",
        "--output-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt"),
    ]  # fmt: skip
    try:
        main(argv)
    except SystemExit as exit_:
        assert exit_.code == 0
    stdout = capsys.readouterr().out
    final = json.loads(stdout.strip().splitlines()[-1])
    decision = final["precision_choice"]
    assert decision["how"] == "measured" and decision["chosen"] == final["precision"]
    assert decision["fp32_step_ms"] > 0
    assert "precision: " + final["precision"] + " (measured per step: fp32" in stdout


def test_a_resumed_run_keeps_its_checkpoints_precision_without_measuring() -> None:
    for label in ("fp32", "bfloat16"):
        kept = choose_precision(CPU, amp=None, batch_size=128, kept=label)
        assert (kept.precision.label, kept.how, kept.timings) == (
            label,
            "kept from the checkpoint",
            None,
        )
    # A flag still wins over the checkpoint.
    assert choose_precision(CPU, amp=False, batch_size=128, kept="bfloat16").precision.label == (
        "fp32"
    )
