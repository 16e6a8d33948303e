#!/usr/bin/env bash
# Compare de-identification throughput: Mado's engine (core/examples/deid-bench.rs, rayon
# over all cores) vs dicognito (Python) vs dcmtk dcmodify (~20 identifying attributes
# modified/erased, private data erased, new SOP Instance UID, -nb).
#
# usage: core/benches/deid-compare.sh [WORK_DIR] [N]
#   WORK_DIR  scratch directory (default /tmp/mado-deid-bench), N files (default 300)
# Needs: python3 with pydicom + numpy, dicognito (pip install dicognito), dcmtk (dcmodify).
set -euo pipefail
WORK=${1:-/tmp/mado-deid-bench}
N=${2:-300}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IN="$WORK/in"

mkdir -p "$WORK"
if [ "$(find "$IN" -name '*.dcm' 2>/dev/null | wc -l)" -ne "$N" ]; then
  rm -rf "$IN"; mkdir -p "$IN"
  echo "generating $N synthetic 512x512 16-bit CT files in $IN"
  python3 - "$IN" "$N" <<'PY'
import sys, numpy as np, pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, CTImageStorage
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
base = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16)
study = "1.2.826.0.1.3680043.10.777.1"
for i in range(n):
    series = 1 + i // 100
    sop = f"1.2.826.0.1.3680043.10.777.3.{series}.{i}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.777.9"
    meta.SourceApplicationEntityTitle = "CT_SCANNER_1"
    ds = Dataset(); ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage; ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240315"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101112.000"
    ds.AccessionNumber = "ACC%06d" % (i // 100)
    ds.Modality = "CT"; ds.Manufacturer = "ACME"; ds.ManufacturerModelName = "Scan 9000"
    ds.InstitutionName = "General Hospital"; ds.InstitutionAddress = "1 Main Street"
    ds.ReferringPhysicianName = "Doctor^Who"; ds.StationName = "CT01"
    ds.StudyDescription = "CT CHEST"; ds.SeriesDescription = "AXIAL 1mm"
    ds.OperatorsName = "Tech^Anna"; ds.PerformingPhysicianName = "Rad^Bob"
    ds.PatientName = "Yamada^Taro"; ds.PatientID = "PAT%04d" % (i % 3)
    ds.PatientBirthDate = "19600101"; ds.PatientSex = "M"; ds.PatientAge = "064Y"
    ds.PatientWeight = "70"; ds.OtherPatientIDs = "OTHER1"; ds.PatientAddress = "2 Side Road"
    ds.DeviceSerialNumber = "SN123"; ds.SoftwareVersions = "1.0"; ds.ProtocolName = "CHEST ROUTINE"
    ds.BodyPartExamined = "CHEST"; ds.SliceThickness = "1"; ds.KVP = "120"
    ds.StudyInstanceUID = study; ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.777.2.{series}"
    ds.StudyID = "S1"; ds.SeriesNumber = series; ds.InstanceNumber = i + 1
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.777.4"
    ds.ImagePositionPatient = [0, 0, float(i)]; ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = float(i); ds.PixelSpacing = [0.7, 0.7]
    ref = Dataset(); ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.777.3.1.0"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 512; ds.Columns = 512; ds.BitsAllocated = 16; ds.BitsStored = 12; ds.HighBit = 11
    ds.PixelRepresentation = 0; ds.WindowCenter = "40"; ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"; ds.RescaleSlope = "1"
    blk = ds.private_block(0x0009, "ACME PRIVATE", create=True)
    blk.add_new(0x01, "LO", "private value"); blk.add_new(0x02, "LO", "Yamada")
    ds.PixelData = np.roll(base, i, axis=0).tobytes()
    ds.save_as(f"{out}/ct{i:04d}.dcm", enforce_file_format=True)
PY
fi

echo "building the Mado bench (release)"
(cd "$ROOT" && cargo build --release -q -p mado-core --example deid-bench)
BENCH="$ROOT/target/release/examples/deid-bench"

now() { date +%s.%N; }
# run a command, print "wall_seconds cpu_seconds(user+sys, children included)"
timed() {
  local TIMEFORMAT='%R %U %S' out
  out=$( { time "$@" >/dev/null 2>&1; } 2>&1 )
  python3 -c "import sys; r,u,s=map(float, sys.argv[1].split()[-3:]); print('%.3f %.3f' % (r, u + s))" "$out"
}
sync

# --- Mado: parse + screen + de-identify + write, rayon over all cores -----------------------
# best of 3 runs (the machine may be shared); `sync` first so that no earlier write-back
# competes with the timed run.
mado_run() { # $1 = threads (0 = all) ; prints "wall cpu" of the fastest run
  local best="999 0"
  for _ in 1 2 3; do
    rm -rf "$WORK/out-mado"; sync
    local extra=(); [ "$1" != 0 ] && extra=(--threads "$1")
    local r; r=$(timed "$BENCH" "$IN" "$WORK/out-mado" "${extra[@]}")
    best=$(python3 -c "import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); print(' '.join(a if float(a[0]) <= float(b[0]) else b))" "$best" "$r")
  done
  echo "$best"
}
MADO=$(mado_run 0)
MADO1=$(mado_run 1)

# --- dicognito -----------------------------------------------------------------------------
rm -rf "$WORK/out-dicognito"; sync
DCG=$(timed python3 -m dicognito --quiet --output-directory "$WORK/out-dicognito" "$IN")

# --- dcmtk dcmodify: copy to the output folder, then modify in place (one process) ---------
rm -rf "$WORK/out-dcmtk"; mkdir -p "$WORK/out-dcmtk"; sync
dcmtk_run() {
  cp "$IN"/*.dcm "$WORK/out-dcmtk/"
  dcmodify -q -nb -ie -imt -gin -ep \
    -ma "(0010,0010)=ANON" -ma "(0010,0020)=ANON-ID" -ma "(0010,0030)=" -ma "(0010,0040)=" \
    -ma "(0008,0050)=" -ma "(0008,0090)=" -ma "(0020,0010)=" -ma "(0008,0020)=" -ma "(0008,0030)=" \
    -ea "(0010,1010)" -ea "(0010,1030)" -ea "(0010,1000)" -ea "(0010,1040)" \
    -ea "(0008,0080)" -ea "(0008,0081)" -ea "(0008,1010)" -ea "(0008,1030)" -ea "(0008,103E)" \
    -ea "(0008,1070)" -ea "(0008,1050)" -ea "(0018,1000)" -ea "(0018,1030)" \
    "$WORK/out-dcmtk"/*.dcm
}
DCM=$(timed dcmtk_run)

CORES=$(nproc)
printf '\n%-40s %8s %8s %12s %12s %9s\n' "tool ($N files, 512x512x16 CT)" wall_s cpu_s instances/s inst/cpu_s "vs mado"
MADO_WALL=${MADO%% *}
row() { # name "wall cpu"
  python3 - "$1" "$2" "$N" "$MADO_WALL" <<'PY'
import sys
name, (wall, cpu), n, mado = sys.argv[1], map(float, sys.argv[2].split()), int(sys.argv[3]), float(sys.argv[4])
print('%-40s %8.3f %8.3f %12.0f %12.0f %8.1fx' % (name, wall, cpu, n / wall, n / cpu if cpu else 0, wall / mado))
PY
}
row "mado deid-bench (rayon, $CORES threads)" "$MADO"
row "mado deid-bench (1 thread)" "$MADO1"
row "dicognito $(python3 -m dicognito --version 2>/dev/null | awk '/dicognito/ {print $3}')" "$DCG"
row "dcmtk dcmodify (cp + 1 process)" "$DCM"
echo "wall-clock incl. process start-up; mado: fastest of 3 runs; inst/cpu_s = instances per CPU-second"
echo "(user+sys); 'vs mado' = wall time / mado wall time. Load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
