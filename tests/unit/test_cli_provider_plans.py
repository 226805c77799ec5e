"""``carbonctl`` on a free Electricity Maps plan, through the real console script against
faultkit's loopback server answering with the API's own 401 bodies (issue #28 items 1, 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import FaultServer

CARBONCTL = str(Path(sys.executable).parent / "carbonctl")
PY = sys.executable
TOKEN = "em-free-7d1c0b2a9e"


@pytest.fixture
def server():
    fault = FaultServer().start()  # by default the plan lacks the forecast, as a free one
    yield fault
    fault.stop()


def carbonctl(server: FaultServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    source = ["--provider", "electricitymaps", "--base-url", server.base_url,
              "--token-file", str(token)]  # fmt: skip
    return subprocess.run(
        [CARBONCTL, args[0], *source, *args[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("ELECTRICITYMAPS")},
    )


def test_intensity_prints_the_reading_when_only_the_forecast_is_outside_the_plan(server, tmp_path):
    result = carbonctl(server, tmp_path, "intensity", "--zone", "DE")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DE: 300.0 gCO2eq/kWh")
    assert "forecast: none: your Electricity Maps plan does not include the forecast" in (
        result.stdout
    )
    assert result.stderr == ""


def test_a_zone_outside_the_plan_names_the_plan_not_the_token(server, tmp_path):
    server.not_in_plan = {"latest", "history", "past-range", "forecast"}
    result = carbonctl(server, tmp_path, "intensity", "--zone", "FR")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("carbonctl: error: electricitymaps zone 'FR': your Electricity Maps")
    assert "plan does not include this zone" in line and "token itself was accepted" in line
    assert TOKEN not in line


def test_a_rejected_token_says_so(server, tmp_path):
    server.set("DE", mode="badtoken")
    result = carbonctl(server, tmp_path, "intensity", "--zone", "DE")
    assert result.returncode == 2
    assert "the token was rejected: check ELECTRICITYMAPS_TOKEN" in result.stderr


def test_forecast_strategy_on_a_free_plan_uses_the_own_forecaster_on_the_last_day(server, tmp_path):
    server.not_in_plan = {"forecast", "past-range"}
    result = carbonctl(
        server, tmp_path, "run", "--zone", "DE", "--strategy", "forecast",
        "--max-delay", "2h", "--expected-duration", "1h", "--poll", "1h",
        "--", PY, "-c", "print('ran')",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "forecaster history: last 24h of electricitymaps history only (your Electricity "
        "Maps plan does not include past-range"
    ) in result.stdout
    assert "forecast from own forecaster" in result.stdout
    assert "ran" in result.stdout
    assert "forecast unavailable" not in result.stderr and "HTTP 401" not in result.stderr
    assert server.count("DE", "past-range") == 1 and server.count("DE", "history") == 1
