#!/usr/bin/env bash
# Mado demo on one machine: build, start mado-server and mado-gateway with
# their built-in demo defaults in demo mode (everything under ./mado-data/), push a
# synthetic CT and CR study with dcmtk's storescu, and keep running until
# Ctrl-C. Open http://127.0.0.1:8080/ and sign in as admin / mado-demo.
#
#   MADO_DEMO_RELEASE=1   build with --release (slower build, faster binaries)
#   MADO_DEMO_CT_SLICES=N slices of the demo CT series (default 60)
#   MADO_DEMO_SKIP_BUILD=1 use the binaries already in target/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="$ROOT/mado-data"
LOGS="$DATA/logs"
ADMIN_USER=admin
ADMIN_PASSWORD=mado-demo
CT_SLICES="${MADO_DEMO_CT_SLICES:-60}"
HTTP="127.0.0.1:8080"
DICOM_PORT=11112

log() { printf '[demo] %s\n' "$*"; }
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
# dcmtk's storescu pushes the sample studies; cmake, g++ and nasm build the
# native codecs (CharLS for JPEG-LS, libjpeg-turbo with its SIMD code).
STORESCU=""
for c in /usr/bin/storescu $(command -v -a storescu 2>/dev/null || true); do
  v="$("$c" --version 2>&1 || true)"
  case "$v" in *dcmtk*) STORESCU="$c"; break ;; esac
done
APT=()
[ -n "$STORESCU" ] || APT+=(dcmtk)
for tool in cmake g++ nasm; do command -v "$tool" >/dev/null || APT+=("$tool"); done
if [ "${#APT[@]}" -gt 0 ]; then
  log "installing ${APT[*]}"
  SUDO=(); [ "$(id -u)" -ne 0 ] && SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${APT[@]}"
  [ -n "$STORESCU" ] || STORESCU=/usr/bin/storescu
fi

# ---------------------------------------------------------------- build
# Debug by default: the workspace profile already optimises dependencies
# (opt-level 2), and `--workspace` resolves the same dependency features as
# scripts/test.sh, so the two share one build instead of compiling every
# dependency twice (selecting packages with -p would unify features
# differently).
PROFILE=debug
BUILD=(cargo build --workspace --bins)
if [ "${MADO_DEMO_RELEASE:-0}" = 1 ]; then PROFILE=release; BUILD+=(--release); fi
if [ "${MADO_DEMO_SKIP_BUILD:-0}" = 1 ]; then
  log "MADO_DEMO_SKIP_BUILD=1: using the binaries already built"
else
  log "building (${BUILD[*]})"
  "${BUILD[@]}"
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/$PROFILE"
for b in mado-server mado-gateway mado-samples; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing after the build"
done

# ---------------------------------------------------------------- start
mkdir -p "$LOGS"
# The binaries run from the repository root with their embedded defaults:
# SQLite at mado-data/mado.db, objects in mado-data/objects, spool in
# mado-data/spool, HTTP on 127.0.0.1:8080, DICOM on 127.0.0.1:11112.
unset "${!MADO_@}" 2>/dev/null || true
# Demo mode: the built-in demo secrets (audit key, server secret, gateway token,
# de-identification secret, vault key) are accepted. Without it both binaries
# refuse to start with them.
export MADO_SERVER__DEMO__ENABLED=true MADO_GATEWAY__DEMO__ENABLED=true

log "creating the admin account"
MADO_ADMIN_PASSWORD="$ADMIN_PASSWORD" "$BIN/mado-server" create-admin --username "$ADMIN_USER" \
  >>"$LOGS/server.log" 2>&1 || { tail -n 20 "$LOGS/server.log" >&2; die "create-admin failed"; }

PIDS=()
cleanup() {
  trap - INT TERM EXIT
  if [ "${#PIDS[@]}" -gt 0 ]; then
    log "stopping (pids ${PIDS[*]})"
    kill "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_ready NAME LOGFILE LINE-PREFIX PID
wait_ready() {
  for _ in $(seq 1 120); do
    if grep -q "^$3" "$2" 2>/dev/null; then return 0; fi
    kill -0 "$4" 2>/dev/null || { tail -n 30 "$2" >&2; die "$1 exited during start-up (log: $2)"; }
    sleep 0.5
  done
  tail -n 30 "$2" >&2
  die "$1 did not become ready within 60 s (log: $2)"
}

: >"$LOGS/server.out"
"$BIN/mado-server" serve >"$LOGS/server.out" 2>>"$LOGS/server.log" &
PIDS+=($!)
wait_ready mado-server "$LOGS/server.out" "mado-server listening" "$!"
log "$(head -n 1 "$LOGS/server.out")"

: >"$LOGS/gateway.out"
"$BIN/mado-gateway" >"$LOGS/gateway.out" 2>>"$LOGS/gateway.log" &
PIDS+=($!)
wait_ready mado-gateway "$LOGS/gateway.out" "mado-gateway listening" "$!"
log "$(head -n 1 "$LOGS/gateway.out")"

# ---------------------------------------------------------------- samples
SAMPLES="$DATA/samples"
rm -rf "$SAMPLES"
"$BIN/mado-samples" --out "$SAMPLES" --ct-slices "$CT_SLICES" --ct2-slices 4 --cr-images 2 --seed 1
FILES=("$SAMPLES"/*.dcm)
log "pushing ${#FILES[@]} instances with $STORESCU"
TCP_NODELAY=1 "$STORESCU" -aet DEMO -aec MADO --required 127.0.0.1 "$DICOM_PORT" "${FILES[@]}" \
  || die "storescu failed"

# Acknowledged instances wait in spool/pending/ until they are uploaded and
# registered; an empty pending/ means the server has indexed them all.
PENDING="$DATA/spool/pending"
log "waiting until every instance is indexed"
for _ in $(seq 1 600); do
  n=$(find "$PENDING" -maxdepth 1 -name '*.dcm' 2>/dev/null | wc -l)
  [ "$n" -eq 0 ] && break
  sleep 0.5
done
n=$(find "$PENDING" -maxdepth 1 -name '*.dcm' 2>/dev/null | wc -l)
[ "$n" -eq 0 ] || die "$n instances still pending after 5 minutes (see $LOGS/gateway.log)"
bad=$(find "$DATA/spool/failed" "$DATA/spool/quarantine" -name '*.dcm' 2>/dev/null | wc -l)
[ "$bad" -eq 0 ] || log "warning: $bad instances in spool/failed or spool/quarantine (see $LOGS/gateway.log)"

cat <<EOT

  Mado is running.
    viewer:  http://$HTTP/
    login:   $ADMIN_USER / $ADMIN_PASSWORD
    DICOM:   AE title MADO at 127.0.0.1:$DICOM_PORT (e.g. storescu 127.0.0.1 $DICOM_PORT file.dcm)
    logs:    $LOGS/

  Press Ctrl-C to stop.
EOT
wait
