#!/usr/bin/env bash
# `make demo`: carbonctl run on the bundled SYNTHETIC trace (no account, no network).
#
# It replays operator/carbonaware/data/demo_trace.csv (made up by hack/make_demo_trace.py, zone
# "SYNTHETIC") at 900× real time from an evening peak, waits visibly for the grid to drop under
# 150 g/kWh, then trains the MNIST trainer briefly (data from $MNIST_DIR, default
# ../shared/data/mnist) — or, without the trainer or the data, runs a short stand-in command
# and says so. It leaves carbon_plot.png and carbon_log.csv in the repository root.
#
# Real data instead: --trace path/to/electricitymaps_export.csv (as downloaded), or a live
# provider: --provider electricitymaps --zone DE with ELECTRICITYMAPS_TOKEN set (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${MNIST_DIR:-}" ] && [ -d ../shared/data/mnist/MNIST/raw ]; then
  MNIST_DIR="$(cd ../shared/data/mnist && pwd)"
fi
export MNIST_DIR="${MNIST_DIR:-}"

echo "== carbon-aware demo: replaying a SYNTHETIC grid trace at 900x real time =="
echo "   (one trace hour every 4 s: a 40 s training run spans about 10 trace hours)"
status=0
.venv/bin/carbonctl run \
  --provider replay --start 17h --speed 900 --poll 1h \
  --threshold 150 --max-delay 12h --strategy threshold \
  --log carbon_log.csv --plot carbon_plot.png || status=$?

echo
echo "== done (exit $status) =="
echo "plot: $(pwd)/carbon_plot.png"
echo "log:  $(pwd)/carbon_log.csv"
grep -E '^# (energy_kwh|energy_method|emissions_g|baseline_g|saved_g|saved_percent|accuracy)=' \
  carbon_log.csv | sed 's/^# /  /' || true
exit "$status"
