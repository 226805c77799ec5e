#!/usr/bin/env bash
# Prometheus and promtool for the monitoring tests, from Debian's `prometheus` package
# (it ships both binaries). Idempotent: does nothing when both are on PATH already.
#   hack/prometheus.sh          install if missing; print the directory holding both binaries
# The package's own service is not used (tests start prometheus themselves, on loopback).
# Exit 3 when it cannot be installed here; the last stderr line says why.
set -euo pipefail

found() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }
if ! found; then
  if [[ $(id -u) != 0 ]] && ! command -v sudo >/dev/null; then
    echo "prometheus unavailable: not root and no sudo to apt-get install prometheus" >&2
    exit 3
  fi
  as_root=()
  [[ $(id -u) == 0 ]] || as_root=(sudo)
  echo "prometheus.sh: installing Debian's prometheus (prometheus + promtool)" >&2
  export DEBIAN_FRONTEND=noninteractive
  lock=(-o DPkg::Lock::Timeout=600)
  # Without a service manager the package must not try to start its daemon.
  policy=/usr/sbin/policy-rc.d
  made_policy=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    made_policy=1
  fi
  rc=0
  "${as_root[@]}" apt-get "${lock[@]}" install -y --no-install-recommends prometheus >&2 || {
    "${as_root[@]}" apt-get "${lock[@]}" update -q >&2 &&
      "${as_root[@]}" apt-get "${lock[@]}" install -y --no-install-recommends prometheus >&2
  } || rc=$?
  [[ -z $made_policy ]] || "${as_root[@]}" rm -f "$policy"
  if ((rc != 0)) || ! found; then
    echo "prometheus unavailable: apt-get install prometheus failed (exit $rc)" >&2
    exit 3
  fi
fi
dirname "$(command -v promtool)"
