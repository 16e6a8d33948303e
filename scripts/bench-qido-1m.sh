#!/usr/bin/env bash
# QIDO-RS at scale: p50/p95 of a study search by patient, date range and
# modality with 1,000,000 synthetic indexed instances in PostgreSQL, measured
# over HTTP with a keep-alive session. Bench script, not a test (called by
# scripts/bench-dicomweb.sh; also runs on its own).
#
#   QIDO_INSTANCES=N   indexed instances (default 1000000; 10 per series,
#                      2 series per study, 2.5 studies per patient)
#   QIDO_N=N           timed requests (default 300)
#   QIDO_PG=URL        PostgreSQL admin URL (default postgres://postgres@127.0.0.1:5432/postgres)
#   BENCH_SKIP_BUILD=1 use target/release/mado-server as is
#   QIDO_KEEP_DB=1     keep the database (to EXPLAIN the queries)
# Target: p95 < 50 ms. A fresh database is created and dropped.
set -euo pipefail
# Local benchmark on loopback: the built-in demo secrets are fine (demo mode).
export MADO_SERVER__DEMO__ENABLED=true MADO_GATEWAY__DEMO__ENABLED=true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
N_INST="${QIDO_INSTANCES:-1000000}"
N_REQ="${QIDO_N:-300}"
PG_ADMIN="${QIDO_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
log() { printf '[bench-qido] %s\n' "$*" >&2; }
die() { printf '[bench-qido] error: %s\n' "$*" >&2; exit 1; }

command -v psql >/dev/null || die "psql missing (PostgreSQL client)"
psql -q "$PG_ADMIN" -c 'select 1' >/dev/null 2>&1 || die "PostgreSQL does not answer at $PG_ADMIN (bash scripts/install-test-deps.sh)"
python3 -c 'import requests' 2>/dev/null || pip install -q requests
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building mado-server (release)"
  cargo build --release -q -p server --bin mado-server
fi
SERVER="$TARGET/release/mado-server"
[ -x "$SERVER" ] || die "$SERVER missing"

DB="mado_bench_qido_$$"
BASE_URL="${PG_ADMIN%/*}"
DB_URL="$BASE_URL/$DB"
TMP="$(mktemp -d /tmp/mado-qido.XXXXXX)"
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${QIDO_KEEP_DB:-0}" = 1 ]; then
    log "kept database $DB_URL"
  else
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

psql -q "$PG_ADMIN" -c "CREATE DATABASE \"$DB\"" >/dev/null
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$TMP/mado.toml" <<TOML
[http]
bind = "127.0.0.1:$PORT"
[database]
url = "$DB_URL"
[storage]
kind = "local"
path = "$TMP/objects"
TOML
"$SERVER" --config "$TMP/mado.toml" migrate >"$TMP/migrate.log" 2>&1 || { cat "$TMP/migrate.log" >&2; die "migrate failed"; }
MADO_ADMIN_PASSWORD=bench-password "$SERVER" --config "$TMP/mado.toml" create-admin --username bench >/dev/null 2>>"$TMP/migrate.log"

SERIES=$(( (N_INST + 9) / 10 ))
STUDIES=$(( (SERIES + 1) / 2 ))
PATIENTS=$(( STUDIES * 2 / 5 )); [ "$PATIENTS" -ge 1 ] || PATIENTS=1
log "filling $N_INST instances ($SERIES series, $STUDIES studies, $PATIENTS patients)"
t0=$(date +%s.%N)
psql -q -v ON_ERROR_STOP=1 "$DB_URL" >/dev/null <<SQL
SET synchronous_commit = off;
INSERT INTO patients (patient_id, name, birth_date, sex, created_at)
SELECT 'PAT' || lpad(p::text, 8, '0'), 'ANON^' || p, to_char(date '1940-01-01' + (p * 37 % 25000), 'YYYYMMDD'),
       CASE WHEN p % 2 = 0 THEN 'F' ELSE 'M' END, now()
FROM generate_series(1, $PATIENTS) p;
INSERT INTO studies (study_uid, patient_id, study_date, study_time, accession, description,
                     modalities_in_study, num_series, num_instances, created_at, org_id)
SELECT '2.25.71' || s, (SELECT min(id) FROM patients) + (s % $PATIENTS),
       to_char(date '2015-01-01' + (s * 7919 % 3650), 'YYYYMMDD'), '101500', 'ACC' || s, 'synthetic study',
       (ARRAY['CT','MR','CR','US','DX'])[1 + s % 5] || '\\SR', 2, 20, now(),
       (SELECT id FROM organisations WHERE name = 'default')
FROM generate_series(1, $STUDIES) s;
INSERT INTO series (series_uid, study_id, modality, series_number, description, body_part, num_instances, created_at)
SELECT '2.25.72' || st.id || '.' || k, st.id,
       CASE WHEN k = 1 THEN split_part(st.modalities_in_study, '\\', 1) ELSE 'SR' END,
       k, 'synthetic series', 'CHEST', 10, now()
FROM studies st CROSS JOIN generate_series(1, 2) k;
INSERT INTO instances (sop_instance_uid, series_id, sop_class_uid, instance_number, transfer_syntax_uid,
                       object_key, size, sha256, rows, columns, number_of_frames, metadata, created_at)
SELECT '2.25.73' || se.id || '.' || i, se.id, '1.2.840.10008.5.1.4.1.1.2', i, '1.2.840.10008.1.2.1',
       'studies/x/series/' || se.id || '/instances/' || i || '.dcm', 526000,
       md5(se.id || '.' || i) || md5(i || '.' || se.id), 512, 512, 1,
       '{"00080060":{"vr":"CS","Value":["' || se.modality || '"]},"00200013":{"vr":"IS","Value":[' || i || ']}}', now()
FROM series se CROSS JOIN generate_series(1, 10) i
LIMIT $N_INST;
ANALYZE;
SQL
t1=$(date +%s.%N)
COUNT="$(psql -tA "$DB_URL" -c 'select count(*) from instances')"
log "filled in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s: $COUNT instances"

RUST_LOG=warn "$SERVER" --config "$TMP/mado.toml" serve >"$TMP/out" 2>"$TMP/log" &
PID=$!
for i in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.2
  [ "$i" = 100 ] && { tail -20 "$TMP/log" >&2; die "server did not start"; }
done

python3 - "http://127.0.0.1:$PORT" "$PATIENTS" "$N_REQ" "$COUNT" <<'PY'
import random, re, statistics, sys, time
import requests
base, patients, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = requests.Session()
page = s.get(f"{base}/login").text
csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
s.post(f"{base}/login", data={"username": "bench", "password": "bench-password", "csrf": csrf}).raise_for_status()
rng = random.Random(6)
hdr = {"Accept": "application/dicom+json"}
def one(p, mod):
    url = (f"{base}/dicomweb/studies?PatientID=PAT{p:08d}&StudyDate=20170101-20221231"
           f"&ModalitiesInStudy={mod}")
    t = time.perf_counter()
    r = s.get(url, headers=hdr)
    body = r.content
    dt = (time.perf_counter() - t) * 1000
    if r.status_code not in (200, 204):
        sys.exit(f"QIDO failed: {r.status_code} {body[:200]!r}")
    return dt, (len(r.json()) if r.status_code == 200 else 0)
for _ in range(10):
    one(rng.randrange(1, patients + 1), "CT")
times, hits = [], 0
for _ in range(n):
    # Modality of a patient's studies cycles through CT, MR, CR, US, DX.
    dt, k = one(rng.randrange(1, patients + 1), rng.choice(["CT", "MR", "CR", "US", "DX"]))
    times.append(dt)
    hits += k
times.sort()
p50 = statistics.median(times)
p95 = times[int(0.95 * (len(times) - 1))]
print(f"\nQIDO study search by PatientID + StudyDate range + ModalitiesInStudy, {count} indexed instances (PostgreSQL)")
print(f"{'case':32} {'p50 ms':>9} {'p95 ms':>11} {'hits':>7}  target")
print(f"{'QIDO 1M: patient+date+modality':32} {p50:9.2f} {p95:11.2f} {hits:7d}  p95 < 50 ms {'ok' if p95 < 50 else 'MISS'}", flush=True)
PY
