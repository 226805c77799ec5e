"""Every numeric and duration input of carbonctl, carbon-trainer and a CarbonAwareJob spec,
swept with values no run can use: not finite, negative, zero where it means nothing, huge.
A CLI answers one line and exit 2 (never a traceback); the operator's spec parser gives the
one-line SpecError that becomes the job's Failed condition. (The CRD's own rules are swept
against the real apiserver in tests/integration/test_bad_input.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from carbonaware.kube.models import SpecError, parse_spec

BIN = Path(sys.executable).parent

CARBONCTL_BAD = [
    ["--threshold", "nan"],
    ["--power-watts", "nan"],
    ["--power-watts", "1e308"],
    ["--pue", "nan"],
    ["--speed", "inf"],
    ["--speed", "1e300"],
    ["--timeout", "nan"],
    ["--max-delay", "99999999999d"],
    ["--max-delay", "3651d"],
    ["--expected-duration", "999999999d"],
    ["--grace", "1e400s"],
]


@pytest.mark.parametrize("args", CARBONCTL_BAD, ids=" ".join)
def test_carbonctl_run_refuses_unusable_numbers_in_one_line(args: list[str], tmp_path) -> None:
    result = subprocess.run(
        [str(BIN / "carbonctl"), "run", *args, "--", sys.executable, "-c", "pass"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert args[0] in result.stderr or "duration" in result.stderr


def test_carbonctl_static_value_must_be_a_real_intensity(tmp_path) -> None:
    result = subprocess.run(
        [str(BIN / "carbonctl"), "intensity", "--provider", "static", "--zone", "DE",
         "--value", "nan"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--value" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--lr", "nan"], ["--lr", "-1"], ["--watts-per-core", "inf"], ["--watts-per-core", "0"],
     ["--log-every", "-3"], ["--epochs", "0"]],
    ids=" ".join,
)  # fmt: skip
def test_carbon_trainer_refuses_unusable_numbers_in_one_line(args: list[str], tmp_path) -> None:
    result = subprocess.run(
        [str(BIN / "carbon-trainer"), *args], cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and args[0] in result.stderr


@pytest.mark.parametrize(
    "field",
    [{"maxDelay": "3651d"}, {"expectedDuration": "99999999999d"}, {"maxDelay": "999999999d"},
     {"power": {"watts": float("inf")}}, {"thresholdGramsPerKWh": float("nan")},
     {"provider": {"name": "replay", "speed": float("inf")}}],
    ids=str,
)  # fmt: skip
def test_a_spec_the_crd_might_let_through_fails_with_one_line(field: dict) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"zone": "GB", "trainer": {}, **field})
    assert "\n" not in str(caught.value) and str(caught.value).startswith("spec.")
