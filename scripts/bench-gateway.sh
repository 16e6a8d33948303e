#!/usr/bin/env bash
# Receive-path benchmark of mado-gateway vs dcmtk storescp and Orthanc:
# dcmtk storescu (TCP_NODELAY=1) pushes a 512×512 16-bit CT series with 1
# and 4 parallel associations to each SCP (fresh storage per run, loopback).
# Bench script, not a test. Prints one table.
#
#   BENCH_SLICES=N        slices of the CT series (default 300)
#   BENCH_ROUNDS=N        runs per row, the median is printed (default 3:
#                         a 300-instance push lasts well under a second
#                         here, so one run is at the mercy of the machine)
#   BENCH_SKIP_BUILD=1    use the release binaries as they are
#   BENCH_SKIP_E2E=1      receive rows only (no de-identification + upload rows)
#   BENCH_DIR=DIR         where to put spools/stores (default: mktemp under /tmp;
#                         should be on the disk you care about)
#
# Rows:
#   storescp     dcmtk storescp --fork, writes files, no fsync (wire/disk reference)
#   orthanc      Orthanc with a temp index + storage
#   gateway      mado-gateway, spool with fsync, upload disabled (receive only)
#   gateway+e2e  mado-gateway with de-identification on, uploading to S3
#                (moto from .tools/venv, else a local store) and registering
#                with mado-server; "drain" is the time from the last C-STORE
#                response to the last instance confirmed in S3 (read back)
#                and registered (spool/pending empty). moto and mado-server
#                stand in for remote services: they run at nice 10 so they
#                take the slack of this 2-core machine, as they would not
#                share the gateway's cores in a deployment.
#   BENCH_S3=local        e2e rows upload to a local store instead of moto
set -euo pipefail
# Local benchmark on loopback: the built-in demo secrets are fine (demo mode).
export MADO_SERVER__DEMO__ENABLED=true MADO_GATEWAY__DEMO__ENABLED=true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SLICES="${BENCH_SLICES:-300}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
STORESCU=/usr/bin/storescu # pynetdicom ships a `storescu` too
STORESCP=/usr/bin/storescp
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ prerequisites
[ -x "$STORESCU" ] && [ -x "$STORESCP" ] || die "dcmtk missing (apt-get install -y dcmtk)"
if ! command -v Orthanc >/dev/null; then
  log "installing orthanc"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc >/dev/null
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building mado-gateway and mado-samples (release)"
  cargo build --release -q -p dicom-gateway --bin mado-gateway
  cargo build --release -q -p mado-tests --bin mado-samples
fi
GATEWAY="$TARGET/release/mado-gateway"
SAMPLES="$TARGET/release/mado-samples"
[ -x "$GATEWAY" ] || die "$GATEWAY missing (cargo build --release -p dicom-gateway)"
[ -x "$SAMPLES" ] || SAMPLES="$TARGET/debug/mado-samples"
[ -x "$SAMPLES" ] || die "mado-samples missing (cargo build -p mado-tests --bin mado-samples)"
SERVER="${BENCH_SERVER:-$TARGET/release/mado-server}"
[ -x "$SERVER" ] || SERVER="$TARGET/debug/mado-server"

MOTO="$ROOT/.tools/venv/bin/moto_server"
S3_MODE="${BENCH_S3:-moto}"
[ "$S3_MODE" = moto ] && [ ! -x "$MOTO" ] && { log "no $MOTO (bash scripts/install-test-deps.sh): e2e rows use a local store"; S3_MODE=local; }

if [ -n "${BENCH_DIR:-}" ]; then mkdir -p "$BENCH_DIR"; TMP="$(mktemp -d "$BENCH_DIR/mado-bench-gw.XXXXXX")"
else TMP="$(mktemp -d /tmp/mado-bench-gw.XXXXXX)"; fi
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
wait_port() { # port timeout_s
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# ------------------------------------------------------------ disk + data
# dd prints "... copied, S s, X MB/s": recompute from bytes/seconds (unit-proof).
# The disk's speed swings from minute to minute on shared machines: dd runs
# once before every round and the table uses the median.
DD_RUNS=()
measure_dd() {
  local line mbs
  line=$(dd if=/dev/zero of="$TMP/dd.bin" bs=1M count=512 conv=fdatasync 2>&1 | grep copied)
  rm -f "$TMP/dd.bin"
  mbs=$(awk -v l="$line" 'BEGIN { split(l, a, " "); for (i = 1; i in a; i++) if (a[i] == "s,") s = a[i-1]; printf "%.0f", a[1] / s / 1e6 }')
  DD_RUNS+=("$mbs")
  DD_MBS=$(printf '%s\n' "${DD_RUNS[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  log "dd conv=fdatasync (512 MiB) in $TMP: $mbs MB/s"
}
measure_dd

log "generating a ${SLICES}-slice CT"
"$SAMPLES" --out "$TMP/samples" --ct-slices "$SLICES" --ct2-slices 0 --cr-images 0 --ascii-only >/dev/null
mapfile -t FILES < <(find "$TMP/samples" -name '*.dcm' | sort)
N=${#FILES[@]}
BYTES=$(cat "${FILES[@]}" | wc -c)
log "$N files, $BYTES bytes"
# split into 4 groups (round-robin)
for g in 0 1 2 3; do : >"$TMP/group$g"; done
for i in "${!FILES[@]}"; do echo "${FILES[$i]}" >>"$TMP/group$((i % 4))"; done

# push PORT AET NASSOC → sets ELAPSED, checks every response was Success
push() {
  local port=$1 aet=$2 n=$3 g pids=() t0 t1 ok
  t0=$(now)
  if [ "$n" = 1 ]; then
    TCP_NODELAY=1 "$STORESCU" -v -aet BENCH -aec "$aet" 127.0.0.1 "$port" "${FILES[@]}" >"$TMP/push0.log" 2>&1 &
    pids+=($!)
  else
    for ((g = 0; g < n; g++)); do
      mapfile -t part <"$TMP/group$g"
      TCP_NODELAY=1 "$STORESCU" -v -aet BENCH -aec "$aet" 127.0.0.1 "$port" "${part[@]}" >"$TMP/push$g.log" 2>&1 &
      pids+=($!)
    done
  fi
  for p in "${pids[@]}"; do wait "$p" || die "storescu failed (see $TMP/push*.log)"; done
  t1=$(now)
  ok=$(cat "$TMP"/push*.log | grep -c 'Received Store Response (Success)' || true)
  rm -f "$TMP"/push*.log
  [ "$ok" = "$N" ] || die "$aet: only $ok of $N C-STORE responses were Success"
  ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  PUSH_END=$t1
}

declare -A RESULT
declare -A RUNS
ROUNDS="${BENCH_ROUNDS:-3}"
# keep KEY: add $ELAPSED to KEY's runs; RESULT[KEY] = their median so far
keep() {
  RUNS["$1"]="${RUNS["$1"]:-} $ELAPSED"
  RESULT["$1"]=$(printf '%s\n' ${RUNS["$1"]} | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
}
# record KEY LABEL NASSOC: keep this run's time and log it
record() {
  keep "$1"
  log "$(printf '%-12s %s assoc: %6.3f s  %7.1f inst/s' "$2" "$3" "$ELAPSED" "$(awk -v e="$ELAPSED" -v n="$N" 'BEGIN{print n/e}')")"
}

# ------------------------------------------------------------ storescp
run_storescp() { # nassoc
  local port dir pid
  port=$(free_port); dir="$TMP/storescp-$1"; mkdir -p "$dir"
  TCP_NODELAY=1 "$STORESCP" --fork -aet STORESCP -od "$dir" "$port" >"$TMP/storescp.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_port "$port" 20 || die "storescp did not start"
  push "$port" STORESCP "$1"
  stop_pid "$pid"; rm -rf "$dir"
  record "storescp-$1" storescp "$1"
}

# ------------------------------------------------------------ orthanc
run_orthanc() { # nassoc
  local dport hport dir pid
  dport=$(free_port); hport=$(free_port); dir="$TMP/orthanc-$1"; mkdir -p "$dir/db"
  cat >"$dir/orthanc.json" <<EOF
{
  "Name": "bench", "StorageDirectory": "$dir/db", "IndexDirectory": "$dir/db",
  "StorageCompression": false, "Plugins": [], "HttpServerEnabled": true, "HttpPort": $hport,
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomServerEnabled": true, "DicomAet": "ORTHANC", "DicomPort": $dport,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowEcho": true,
  "UnknownSopClassAccepted": true, "ConcurrentJobs": 2, "StableAge": 3600
}
EOF
  TCP_NODELAY=1 Orthanc "$dir/orthanc.json" >"$TMP/orthanc.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_port "$dport" 60 || die "Orthanc did not start (see $TMP/orthanc.log)"
  push "$dport" ORTHANC "$1"
  stop_pid "$pid"; rm -rf "$dir"
  record "orthanc-$1" orthanc "$1"
}

# ------------------------------------------------------------ gateway
storage_toml() { # name → the [storage] table of run `name`
  if [ "$S3_MODE" = moto ]; then
    printf '[storage]\nkind = "s3"\nendpoint = "http://127.0.0.1:%s"\nregion = "us-east-1"\nbucket = "%s"\npath_style = true\ncreate_bucket = true\n' \
      "${MOTO_PORT:-}" "$(echo "$1-r${round:-1}" | tr -c 'a-z0-9\n' '-')"
  else
    printf '[storage]\nkind = "local"\npath = "%s"\n' "$TMP/$1/objects"
  fi
}
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1

start_gateway() { # name upload(true|false) [server_url]
  local dir="$TMP/$1"
  mkdir -p "$dir"
  cat >"$dir/gateway.toml" <<EOF
[dicom]
bind = "127.0.0.1:0"
ae_title = "MADO"
[spool]
dir = "$dir/spool"
$(storage_toml "$1")
[server]
url = "${3:-http://127.0.0.1:9}"
token = "bench-gateway-token-0123456789"
[deid]
secret = "bench-deid-secret-0123456789"
[upload]
enabled = $2
concurrency = 4
retry_base_ms = 100
retry_max_ms = 1000
rescan_secs = 1
EOF
  RUST_LOG=warn TCP_NODELAY=1 "$GATEWAY" --config "$dir/gateway.toml" >"$dir/stdout" 2>"$dir/stderr" &
  GW_PID=$!; PIDS+=("$GW_PID")
  local i
  for ((i = 0; i < 300; i++)); do
    GW_PORT=$(sed -n 's/^mado-gateway listening dicom=.*:\([0-9]*\)$/\1/p' "$dir/stdout" 2>/dev/null || true)
    [ -n "$GW_PORT" ] && return 0
    sleep 0.1
  done
  die "mado-gateway did not start: $(cat "$dir/stderr")"
}

run_gateway() { # nassoc
  start_gateway "gw-$1" false
  push "$GW_PORT" MADO "$1"
  local pending
  pending=$(find "$TMP/gw-$1/spool/pending" -name '*.dcm' | wc -l)
  [ "$pending" = "$N" ] || die "gateway spooled $pending of $N"
  stop_pid "$GW_PID"; rm -rf "$TMP/gw-$1"
  record "gateway-$1" gateway "$1"
}

run_gateway_e2e() { # nassoc
  local sdir="$TMP/server-$1" hport spid url="" t_end
  if [ -x "$SERVER" ]; then
    mkdir -p "$sdir"; hport=$(free_port)
    cat >"$sdir/server.toml" <<EOF
[http]
bind = "127.0.0.1:$hport"
[database]
url = "sqlite://$sdir/mado.db?mode=rwc"
$(storage_toml "e2e-$1")
[ingest]
gateway_tokens = ["bench-gateway-token-0123456789"]
EOF
    (cd "$sdir" && "$SERVER" --config "$sdir/server.toml" migrate >/dev/null 2>&1) || die "mado-server migrate failed"
    (cd "$sdir" && RUST_LOG=warn exec nice -n 10 "$SERVER" --config "$sdir/server.toml" serve >"$sdir/stdout" 2>"$sdir/stderr") &
    spid=$!; PIDS+=("$spid")
    wait_port "$hport" 60 || die "mado-server did not start"
    url="http://127.0.0.1:$hport"
  else
    log "no mado-server binary: the e2e row measures store upload only (registration retried)"
  fi
  start_gateway "e2e-$1" true "$url"
  push "$GW_PORT" MADO "$1"
  record "e2e-$1" gateway+e2e "$1"
  # drain: last C-STORE response → every object confirmed in the store
  # (put, read back and verified) and registered: spool/pending empty
  local objs pend i
  for ((i = 0; i < 6000; i++)); do
    pend=$(find "$TMP/e2e-$1/spool/pending" -name '*.dcm' | wc -l)
    if [ -z "$url" ] && [ "$S3_MODE" = local ]; then
      # nothing registers: count the stored objects instead
      objs=$(find "$TMP/e2e-$1/objects" -name '*.dcm' 2>/dev/null | wc -l)
      [ "$objs" -ge "$N" ] && break
    elif [ "$pend" = 0 ]; then break; fi
    sleep 0.05
  done
  t_end=$(now)
  if [ "$S3_MODE" = moto ]; then
    objs=$("$ROOT/.tools/venv/bin/python" - "$MOTO_PORT" "$(echo "e2e-$1-r${round:-1}" | tr -c 'a-z0-9\n' '-')" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="bench", aws_secret_access_key="bench-secret")
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
    n += sum(1 for o in page.get("Contents", []) if o["Key"].endswith(".dcm"))
print(n)
PY
)
  else
    objs=$(find "$TMP/e2e-$1/objects" -name '*.dcm' 2>/dev/null | wc -l)
  fi
  [ "$objs" -ge "$N" ] || die "only $objs of $N objects reached the store"
  ELAPSED=$(awk -v a="$PUSH_END" -v b="$t_end" 'BEGIN { printf "%.3f", b - a }')
  keep "drain-$1"
  stop_pid "$GW_PID"; [ -n "${spid:-}" ] && stop_pid "$spid"
  rm -rf "$TMP/e2e-$1" "$sdir"
}

if [ "$S3_MODE" = moto ] && [ "${BENCH_SKIP_E2E:-0}" != 1 ]; then
  MOTO_PORT=$(free_port)
  nice -n 10 "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$TMP/moto.log" 2>&1 &
  PIDS+=($!)
  wait_port "$MOTO_PORT" 60 || die "moto_server did not start (see $TMP/moto.log)"
fi

# rounds interleave the SCPs, so that a slow moment of the machine hits
# every row alike
for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round of $ROUNDS"
  [ "$round" = 1 ] || measure_dd
  for n in 1 4; do
    run_storescp "$n"
    run_orthanc "$n"
    run_gateway "$n"
    [ "${BENCH_SKIP_E2E:-0}" = 1 ] || run_gateway_e2e "$n"
  done
done

# ------------------------------------------------------------ table
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
printf '\n%s instances (%s MB) of 512x512 16-bit CT; dd conv=fdatasync: %s MB/s (median of %s: %s); %s; load average %s; e2e store: %s; median of %s rounds\n' \
  "$N" "$MB" "$DD_MBS" "${#DD_RUNS[@]}" "${DD_RUNS[*]}" "$(nproc) cores" "$(cut -d' ' -f1-3 /proc/loadavg)" "$S3_MODE" "$ROUNDS"
printf '%-13s %5s %8s %9s %8s %10s %11s %8s %9s\n' scp assoc "time s" "inst/s" "MB/s" "vs orthanc" "vs storescp" "% of dd" "drain s"
for n in 1 4; do
  for name in storescp orthanc gateway e2e; do
    e=${RESULT["$name-$n"]:-}
    [ -n "$e" ] || continue
    label=$name; [ "$name" = e2e ] && label=gateway+e2e
    drain=${RESULT["drain-$n"]:-}; [ "$name" = e2e ] || drain="-"
    awk -v l="$label" -v n="$n" -v e="$e" -v c="$N" -v b="$BYTES" -v o="${RESULT["orthanc-$n"]}" \
      -v s="${RESULT["storescp-$n"]}" -v dd="$DD_MBS" -v d="$drain" 'BEGIN {
      mbs = b / e / 1e6
      printf "%-13s %5s %8.3f %9.1f %8.1f %9.2fx %10.2fx %7.0f%% %9s\n", l, n, e, c / e, mbs, o / e, s / e, 100 * mbs / dd, d }'
  done
done
