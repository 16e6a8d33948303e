#!/usr/bin/env python3
"""Interoperability check of Mado's DICOMweb origin with the reference
Python client `dicomweb-client` (pip install dicomweb-client pydicom).

usage: dicomweb_client_check.py --url http://HOST:PORT --username U --password P
                                --token GATEWAY_TOKEN --files DIR

DIR holds the source Part 10 files that were loaded into the server; the
script compares what the client gets back with them. Exit status 0 when
every check passes; the first failure is printed and exits 1.
"""
import argparse
import copy
import glob
import io
import os
import re
import sys

try:
    import pydicom
    import requests
    from dicomweb_client.api import DICOMwebClient
except ImportError as e:  # pragma: no cover
    print(f"missing Python package: {e.name} (pip install dicomweb-client pydicom requests)")
    sys.exit(2)


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"ok: {msg}")


def login(base, username, password):
    s = requests.Session()
    page = s.get(f"{base}/login").text
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    if not m:
        fail("no csrf field on the login page")
    r = s.post(f"{base}/login", data={"username": username, "password": password, "csrf": m.group(1)})
    if r.status_code != 200 or r.url.rstrip("/").endswith("/login"):
        fail(f"login failed: {r.status_code}")
    return s


def value(ds_json, tag):
    v = ds_json.get(tag, {}).get("Value", [])
    return v[0] if v else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--files", required=True)
    a = ap.parse_args()

    sources = {}
    for p in sorted(glob.glob(os.path.join(a.files, "*.dcm"))):
        ds = pydicom.dcmread(p)
        sources[ds.SOPInstanceUID] = ds
    if not sources:
        fail(f"no source files in {a.files}")
    src = next(iter(sources.values()))
    st, se, sop = src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID

    client = DICOMwebClient(url=f"{a.url}/dicomweb", session=login(a.url, a.username, a.password))

    studies = client.search_for_studies()
    check(st in [value(s, "0020000D") for s in studies], "search_for_studies finds the study")
    studies = client.search_for_studies(search_filters={"PatientID": str(src.PatientID)})
    check(all(value(s, "00100020") == src.PatientID for s in studies) and studies,
          "search_for_studies with a PatientID filter")
    series = client.search_for_series(study_instance_uid=st)
    check(se in [value(s, "0020000E") for s in series], "search_for_series finds the series")
    insts = client.search_for_instances(study_instance_uid=st, series_instance_uid=se)
    found = sorted(value(i, "00080018") for i in insts)
    expected = sorted(u for u, d in sources.items() if d.SeriesInstanceUID == se)
    check(found == expected, f"search_for_instances lists the {len(expected)} instances")

    meta = client.retrieve_study_metadata(st)
    check(len(meta) == len([d for d in sources.values() if d.StudyInstanceUID == st]),
          "retrieve_study_metadata returns one dataset per instance")
    m0 = next(m for m in meta if value(m, "00080018") == sop)
    check(value(m0, "00280010") == src.Rows, "metadata Rows matches the source")
    check("BulkDataURI" in m0.get("7FE00010", {}), "metadata has a BulkDataURI for Pixel Data")

    ds = client.retrieve_instance(st, se, sop)
    check(ds.SOPInstanceUID == sop, "retrieve_instance returns the instance")
    check(ds.PixelData == src.PixelData, "retrieve_instance pixel data equals the source")

    frames = client.retrieve_instance_frames(st, se, sop, frame_numbers=[1])
    check(len(frames) == 1 and frames[0] == src.PixelData[: len(frames[0])] and len(frames[0]) > 0,
          "retrieve_instance_frames returns the native frame")

    jpeg = client.retrieve_instance_rendered(st, se, sop, media_types=("image/jpeg",))
    check(jpeg[:2] == b"\xff\xd8", "retrieve_instance_rendered returns a JPEG")
    png = client.retrieve_instance_rendered(st, se, sop, media_types=("image/png",))
    check(png[:8] == b"\x89PNG\r\n\x1a\n", "retrieve_instance_rendered returns a PNG")

    # STOW-RS with the gateway token: a copy with a new SOP Instance UID.
    up = copy.deepcopy(src)
    up.SOPInstanceUID = sop + ".99"
    up.file_meta.MediaStorageSOPInstanceUID = up.SOPInstanceUID
    up.PatientIdentityRemoved = "YES"
    stow_session = requests.Session()
    stow_session.headers["Authorization"] = f"Bearer {a.token}"
    stow = DICOMwebClient(url=f"{a.url}/dicomweb", session=stow_session)
    resp = stow.store_instances(datasets=[up])
    refs = resp.get("ReferencedSOPSequence", [])
    check(len(refs) == 1 and refs[0].ReferencedSOPInstanceUID == up.SOPInstanceUID,
          "store_instances answers a ReferencedSOPSequence")
    insts = client.search_for_instances(study_instance_uid=st, series_instance_uid=se,
                                        search_filters={"SOPInstanceUID": up.SOPInstanceUID})
    check(len(insts) == 1, "the stored instance is searchable")
    print("all checks passed")


if __name__ == "__main__":
    main()
