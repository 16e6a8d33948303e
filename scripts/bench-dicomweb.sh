#!/usr/bin/env bash
# DICOMweb benchmark: Mado vs Orthanc (+ DicomWeb plugin) on the same
# 300-slice 512×512 CT, both on loopback with temporary storage.
# Bench script, not a test. Prints one table with the Mado/Orthanc ratios.
#
#   BENCH_SLICES=N   slices of the CT series (default 300)
#   BENCH_N=N        requests per latency figure (default 30)
#   BENCH_SKIP_BUILD=1  use target/release/mado-server as is
#   BENCH_QIDO_1M=0  skip the QIDO search with 1,000,000 indexed instances in
#                    PostgreSQL (scripts/bench-qido-1m.sh, run last)
set -euo pipefail
# Local benchmark on loopback: the built-in demo secrets are fine (demo mode).
export MADO_SERVER__DEMO__ENABLED=true MADO_GATEWAY__DEMO__ENABLED=true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SLICES="${BENCH_SLICES:-300}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ prerequisites
if ! command -v Orthanc >/dev/null || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  log "installing orthanc and orthanc-dicomweb"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null
fi
python3 -c 'import pydicom, requests' 2>/dev/null || pip install -q pydicom requests
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building mado-server (release)"
  cargo build --release -q -p server --bin mado-server
  cargo build --release -q -p mado-tests --bin mado-httpbench
fi
SERVER="$TARGET/release/mado-server"
[ -x "$SERVER" ] || die "$SERVER missing"
HTTPBENCH="$TARGET/release/mado-httpbench"
[ -x "$HTTPBENCH" ] || HTTPBENCH="$TARGET/debug/mado-httpbench"
HB_ARGS=() # the throughput rows use the compiled client when it is built
[ -x "$HTTPBENCH" ] && HB_ARGS=(--httpbench "$HTTPBENCH")
SAMPLES="$TARGET/release/mado-samples"
[ -x "$SAMPLES" ] || SAMPLES="$TARGET/debug/mado-samples"
[ -x "$SAMPLES" ] || die "mado-samples not built (cargo build -p mado-tests --bin mado-samples)"

TMP="$(mktemp -d /tmp/mado-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ------------------------------------------------------------ data
log "generating a ${SLICES}-slice CT"
"$SAMPLES" --out "$TMP/samples" --ct-slices "$SLICES" --ct2-slices 0 --cr-images 0 --ascii-only >/dev/null
# The largest series directory is the CT; mark every file de-identified so
# that Mado's STOW accepts it (the same bytes go to Orthanc).
mkdir -p "$TMP/series"
python3 - "$TMP/samples" "$TMP/series" <<'PY'
import collections, os, sys, pydicom
src, dst = sys.argv[1:]
by_series = collections.defaultdict(list)
for d, _, fs in os.walk(src):
    for f in fs:
        p = os.path.join(d, f)
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        by_series[ds.SeriesInstanceUID].append(p)
series = max(by_series.values(), key=len)
for i, p in enumerate(sorted(series)):
    ds = pydicom.dcmread(p)
    ds.PatientIdentityRemoved = "YES"
    ds.save_as(os.path.join(dst, f"{i:05}.dcm"))
print(len(series))
PY

# ------------------------------------------------------------ Orthanc
OPORT="$(free_port)"; ODPORT="$(free_port)"
mkdir -p "$TMP/orthanc-db"
cat >"$TMP/orthanc.json" <<JSON
{
  "Name": "bench",
  "StorageDirectory": "$TMP/orthanc-db",
  "IndexDirectory": "$TMP/orthanc-db",
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "HttpPort": $OPORT,
  "DicomPort": $ODPORT,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "KeepAlive": true,
  "TcpNoDelay": true,
  "HttpThreadsCount": 50,
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "Host": "127.0.0.1:$OPORT", "Ssl": false }
}
JSON
log "starting Orthanc on 127.0.0.1:$OPORT"
Orthanc "$TMP/orthanc.json" >"$TMP/orthanc.log" 2>&1 &
PIDS+=($!)

# ------------------------------------------------------------ Mado
MPORT="$(free_port)"
TOKEN="bench-gateway-token-0123456789"
cat >"$TMP/mado.toml" <<TOML
[http]
bind = "127.0.0.1:$MPORT"
[database]
url = "sqlite://$TMP/mado/mado.db?mode=rwc"
[storage]
kind = "local"
path = "$TMP/mado/objects"
[ingest]
gateway_tokens = ["$TOKEN"]
TOML
"$SERVER" --config "$TMP/mado.toml" migrate >/dev/null 2>&1 || true
MADO_ADMIN_PASSWORD=bench-password "$SERVER" --config "$TMP/mado.toml" create-admin --username bench >/dev/null
log "starting mado-server on 127.0.0.1:$MPORT"
RUST_LOG=warn "$SERVER" --config "$TMP/mado.toml" serve >"$TMP/mado.out" 2>"$TMP/mado.log" &
PIDS+=($!)

for i in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$OPORT/system" >/dev/null && curl -sf "http://127.0.0.1:$MPORT/healthz" >/dev/null && break
  sleep 0.2
  [ "$i" = 100 ] && { tail -20 "$TMP/orthanc.log" "$TMP/mado.log" >&2; die "servers did not start"; }
done

python3 "$ROOT/scripts/bench_dicomweb.py" \
  --mado "http://127.0.0.1:$MPORT" --orthanc "http://127.0.0.1:$OPORT" \
  --files "$TMP/series" --user bench --password bench-password --token "$TOKEN" \
  -n "${BENCH_N:-30}" "${HB_ARGS[@]}"

# ------------------------------------------------------------ QIDO at 1M instances
if [ "${BENCH_QIDO_1M:-1}" != 0 ]; then
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  BENCH_SKIP_BUILD=1 bash "$ROOT/scripts/bench-qido-1m.sh"
fi
