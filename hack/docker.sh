#!/usr/bin/env bash
# A Docker engine for the tests, without any registry:
#   hack/docker.sh up       install Debian's docker.io if missing, start dockerd if no engine
#                           answers, create the base images python:3.11-slim-bookworm and
#                           python:3.13-slim-trixie locally
#   hack/docker.sh down     stop the dockerd this script started (an engine it found is left alone)
#   hack/docker.sh status   say whether an engine answers and whether the base image exists
#
# No registry can be reached here, so the base images the Dockerfiles name in FROM are made
# from a debootstrap of Debian (bookworm: the same Python 3.11 as python:3.11-slim-bookworm;
# trixie: Python 3.13 as python:3.13-slim-trixie, the trainer's base for Debian's torch 2.6)
# and `docker import`ed under that tag. The rootfs tarballs are cached outside the checkout in
# ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/base/, keyed by recipe version, so warm runs take
# seconds. Containers reach Debian and PyPI through the same gateway as the host, so the image
# gets the host's apt sources and CA bundle.
#
# Env: DOCKER_STATE_DIR (pidfile and log of a dockerd started here; default
# /tmp/carbonaware-docker), CARBONAWARE_CACHE, BASE_IMAGE (default python:3.11-slim-bookworm),
# TRIXIE_BASE_IMAGE (default python:3.13-slim-trixie).
# Exit 3 when no engine can run here (cannot install or start dockerd); its last stderr line,
# "docker unavailable: <why>", is what tests print when they skip. Other failures exit 1.
set -euo pipefail

state_dir="${DOCKER_STATE_DIR:-/tmp/carbonaware-docker}"
cache_dir="${CARBONAWARE_CACHE:-$HOME/.cache/carbonaware}/base"
base_image="${BASE_IMAGE:-python:3.11-slim-bookworm}"
trixie_base_image="${TRIXIE_BASE_IMAGE:-python:3.13-slim-trixie}"
# Bump when the recipe below changes: the cached rootfs is keyed by it (<suite>-<recipe>).
base_recipe="minbase-python3-v1"
base_packages="python3,python3-venv,python3-pip,ca-certificates"
mirror="$(awk '$1 == "URIs:" {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

log() { echo "docker.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}
unavailable() {
  echo "docker unavailable: $*" >&2
  exit 3
}
# Runs a step and prints how long it took.
timed() {
  local what="$1" start=$SECONDS
  shift
  "$@"
  log "$what took $((SECONDS - start)) s"
}

engine_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

apt_install() {
  [[ $(id -u) == 0 ]] || unavailable "installing $* needs root (apt-get)"
  # One `apt-get update` per run, and only when something is missing.
  if [[ -z "${_apt_updated:-}" ]]; then
    apt-get update -qq >/dev/null || unavailable "apt-get update failed (no Debian mirror?)"
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    unavailable "apt-get install $* failed"
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v docker >/dev/null || missing+=(docker.io)
  if ((${#missing[@]})); then timed "installing ${missing[*]}" apt_install "${missing[@]}"; fi
}

ours_running() {
  [[ -f "$state_dir/dockerd.pid" ]] && kill -0 "$(cat "$state_dir/dockerd.pid")" 2>/dev/null
}

wait_for_engine() {
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

start_dockerd() {
  mkdir -p "$state_dir"
  local pidfile
  # A dockerd that is running but slow to answer (a loaded machine) is waited for, not
  # doubled: a second one would fail on the socket and look like "no engine here".
  for pidfile in "$state_dir/dockerd.pid" /var/run/docker.pid; do
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      wait_for_engine || unavailable "dockerd (pid $(cat "$pidfile")) runs but does not answer"
      return
    fi
  done
  # Debian's docker.io runs its containerd as a child of dockerd (not a system containerd),
  # so the node's containerd (hack/node.sh, own socket) never shares state with it.
  # Close inherited descriptors above stderr first: a caller's pipe (a `2> >(sed ...)`
  # process substitution, a Popen pipe) held open by the daemon would make that caller
  # wait for EOF for as long as dockerd lives.
  (
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      ((fd > 2)) && eval "exec $fd>&-"
    done
    exec setsid dockerd --pidfile "$state_dir/dockerd.pid" >"$state_dir/dockerd.log" 2>&1 </dev/null
  ) &
  echo $! >"$state_dir/dockerd.launcher.pid"
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    if ! kill -0 "$(cat "$state_dir/dockerd.launcher.pid")" 2>/dev/null; then
      tail -n 20 "$state_dir/dockerd.log" >&2 || true
      unavailable "dockerd exited at start (log: $state_dir/dockerd.log)"
    fi
    ((SECONDS < deadline)) || unavailable "dockerd did not answer within 60 s (log: $state_dir/dockerd.log)"
    sleep 0.5
  done
  touch "$state_dir/started-here"
}

run_debootstrap() {
  local suite="$1" root="$2"
  debootstrap --variant=minbase --include="$base_packages" "$suite" "$root" "$mirror" \
    >"$cache_dir/debootstrap-$suite.log" 2>&1 ||
    die "debootstrap $suite failed (log: $cache_dir/debootstrap-$suite.log)"
}

# debootstrap of SUITE + Python, with the host's apt mirror, CA bundle and pip config.
build_rootfs_tarball() {
  local suite="$1" tarball="$2" root
  command -v debootstrap >/dev/null || timed "installing debootstrap" apt_install debootstrap
  root="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  timed "debootstrap $suite ($base_packages)" run_debootstrap "$suite" "$root"

  # Same mirror and gateway as the host (deb.debian.org resolves to the gateway here); the
  # host's sources name bookworm, another suite gets them with its own name.
  rm -f "$root/etc/apt/sources.list"
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    sed "s/bookworm/$suite/g" /etc/apt/sources.list.d/debian.sources \
      >"$root/etc/apt/sources.list.d/debian.sources"
  else
    echo "deb $mirror $suite main" >"$root/etc/apt/sources.list"
  fi
  # The mirror serves a frozen snapshot whose Release files are past Valid-Until.
  printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
    >"$root/etc/apt/apt.conf.d/99snapshot"
  # The gateway's CAs: in the bundle, and where update-ca-certificates keeps them.
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null ||
    true
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  # Like the official image: `pip install` into the image's Python works, `python` exists.
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  timed "packing the rootfs" tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv -f "$tarball.tmp" "$tarball"
}

# ensure_base_image SUITE TAG: the image TAG from a (cached) debootstrap of SUITE.
ensure_base_image() {
  local suite="$1" image="$2"
  if docker image inspect "$image" >/dev/null 2>&1; then
    log "base image $image present"
    return
  fi
  mkdir -p "$cache_dir"
  local version="$suite-$base_recipe"
  local tarball="$cache_dir/$version.tar"
  [[ -s "$tarball" ]] || build_rootfs_tarball "$suite" "$tarball"
  timed "docker import $image" docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $version (hack/docker.sh)" \
    "$tarball" "$image" >/dev/null
}

up() {
  local start=$SECONDS
  ensure_packages
  if engine_answers; then
    log "engine $(docker version --format '{{.Server.Version}}') already answers"
  else
    timed "starting dockerd" start_dockerd
  fi
  ensure_base_image bookworm "$base_image"
  ensure_base_image trixie "$trixie_base_image"
  log "up in $((SECONDS - start)) s"
}

down() {
  if ! ours_running; then
    log "no dockerd started by this script is running"
    rm -f "$state_dir/started-here"
    return
  fi
  local pid
  pid="$(cat "$state_dir/dockerd.pid")"
  kill "$pid"
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -0 "$pid" 2>/dev/null && die "dockerd (pid $pid) did not stop within 30 s"
  rm -f "$state_dir/started-here" "$state_dir/dockerd.launcher.pid"
  log "stopped dockerd (pid $pid)"
}

status() {
  if engine_answers; then
    echo "engine: $(docker version --format '{{.Server.Version}}')$(ours_running && echo ' (started by hack/docker.sh)')"
  else
    echo "engine: not answering"
    return 1
  fi
  local image missing=0
  for image in "$base_image" "$trixie_base_image"; do
    if docker image inspect "$image" >/dev/null 2>&1; then
      echo "base image: $image"
    else
      echo "base image: $image missing"
      missing=1
    fi
  done
  return "$missing"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
  echo "usage: $0 up|down|status" >&2
  exit 2
  ;;
esac
