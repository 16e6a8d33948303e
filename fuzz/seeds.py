#!/usr/bin/env python3
"""Write the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Run with the project's venv (pydicom): .tools/venv/bin/python fuzz/seeds.py
Small files only (a few KiB each); the hostile corpus (tests/corpus/hostile/)
adds malformed DICOM to the DICOM targets.
"""

import io
import json
import os
import struct
import sys

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage

HERE = os.path.dirname(os.path.abspath(__file__))
HOSTILE = os.path.join(HERE, "..", "tests", "corpus", "hostile")


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def dataset(charset=None, name="Yamada^Tarou", frames=None):
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyDate = "20240102"
    ds.Modality = "OT"
    ds.StudyDescription = "seed"
    ds.PatientName = name
    ds.PatientID = "P-1"
    ds.PatientBirthDate = "19700101"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.5"
    item = Dataset()
    item.CodeValue = "T-1"
    item.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames:
        ds.NumberOfFrames = frames
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(16)) * (frames or 1)
    return ds


def raw_dataset(ds, implicit=False, little=True):
    buf = DicomBytesIO()
    buf.is_implicit_VR = implicit
    buf.is_little_endian = little
    write_dataset(buf, ds)
    return buf.getvalue()


def part10(ds, ts=ExplicitVRLittleEndian, preamble=True):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1.99"
    fds = FileDataset(None, ds, file_meta=meta, preamble=b"\0" * 128)
    buf = io.BytesIO()
    fds.save_as(buf, enforce_file_format=True)
    b = buf.getvalue()
    return b if preamble else b[128:]


def hostile():
    out = {}
    if os.path.isdir(HOSTILE):
        for n in sorted(os.listdir(HOSTILE)):
            with open(os.path.join(HOSTILE, n), "rb") as f:
                out[n] = f.read()
    return out


def implicit_el(group, elem, value):
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", group, elem, len(value)) + value


def command(elems):
    body = b"".join(implicit_el(0, e, v) for e, v in elems)
    return implicit_el(0, 0x0000, struct.pack("<I", len(body))) + body


def us(v):
    return struct.pack("<H", v)


def pdu_item(t, body):
    return struct.pack(">BBH", t, 0, len(body)) + body


def associate_rq():
    app = pdu_item(0x10, b"1.2.840.10008.3.1.1.1")
    ab = pdu_item(0x30, SecondaryCaptureImageStorage.encode())
    ts = pdu_item(0x40, b"1.2.840.10008.1.2.1") + pdu_item(0x40, b"1.2.840.10008.1.2")
    pc = pdu_item(0x20, bytes([1, 0, 0, 0]) + ab + ts)
    ui = pdu_item(0x50, pdu_item(0x51, struct.pack(">I", 16384)) + pdu_item(0x52, b"1.2.3.4")
                  + pdu_item(0x55, b"SEED"))
    body = struct.pack(">HH", 1, 0) + b"MADO".ljust(16) + b"SEEDER".ljust(16) + b"\0" * 32 + app + pc + ui
    return struct.pack(">BBI", 1, 0, len(body)) + body


def main():
    h = hostile()
    # deid: Part 10 files (with and without preamble), a few hostile ones
    put("deid", "latin1.dcm", part10(dataset("ISO_IR 100", "Buc^J\u00e9r\u00f4me")))
    put("deid", "jis.dcm", part10(dataset(["", "ISO 2022 IR 87"], "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce"), preamble=False))
    put("deid", "multiframe.dcm", part10(dataset(frames=3)))
    put("deid", "implicit.dcm", part10(dataset(), ImplicitVRLittleEndian))
    for n in ["broken-iso2022.dcm", "frames-50m.dcm", "html-in-text.dcm", "duplicate-tags.dcm"]:
        if n in h:
            put("deid", n, h[n])

    # charset: [vr][n][term indexes][raw]; indexes into fuzz_targets/charset.rs TERMS
    put("charset", "jis", bytes([0, 2, 0, 8]) + b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B")
    put("charset", "ksx", bytes([0, 2, 0, 10]) + b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7")
    put("charset", "latin1", bytes([1, 1, 1]) + b"Buc^J\xe9r\xf4me")
    put("charset", "utf8", bytes([3, 1, 2]) + "Wang^XiaoDong=\u738b^\u5c0f\u4e1c".encode())
    put("charset", "ir13", bytes([0, 2, 7, 8]) + b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J")
    put("charset", "gb2312", bytes([2, 2, 0, 11]) + b"\x1b$)A\xd6\xd0\xce\xc4")

    # gateway_pdu: association, data, release, abort
    put("gateway_pdu", "associate-rq", associate_rq())
    cmd = command([(0x0002, SecondaryCaptureImageStorage.encode()), (0x0100, us(1)), (0x0110, us(7)),
                   (0x0700, us(0)), (0x0800, us(0)), (0x1000, b"1.2.3.4")])
    pdv = struct.pack(">IBB", len(cmd) + 2, 1, 0x03) + cmd
    put("gateway_pdu", "p-data-tf", struct.pack(">BBI", 4, 0, len(pdv)) + pdv)
    put("gateway_pdu", "release-rq", struct.pack(">BBI", 5, 0, 4) + b"\0" * 4)
    put("gateway_pdu", "abort", struct.pack(">BBI", 7, 0, 4) + b"\0\0\0\2")

    # gateway_dimse: [selector][bytes]; 0 command, 1 response, 2+3k N-ACTION data set
    put("gateway_dimse", "c-store-rq", b"\0" + cmd)
    put("gateway_dimse", "c-echo-rq", b"\0" + command([(0x0002, b"1.2.840.10008.1.1"), (0x0100, us(0x30)),
                                                      (0x0110, us(1)), (0x0800, us(0x0101))]))
    put("gateway_dimse", "n-action-rq", b"\0" + command([(0x0003, b"1.2.840.10008.1.20.1"), (0x0100, us(0x0130)),
                                                        (0x0110, us(3)), (0x0800, us(0)), (0x1001, b"1.2.840.10008.1.20.1.1"),
                                                        (0x1008, us(1))]))
    put("gateway_dimse", "n-event-report-rsp", b"\1" + command([(0x0100, us(0x8100)), (0x0120, us(5)),
                                                               (0x0800, us(0x0101)), (0x0900, us(0))]))
    req = Dataset()
    req.TransactionUID = "1.2.3.9"
    ref = Dataset()
    ref.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4"
    req.ReferencedSOPSequence = Sequence([ref, ref])
    put("gateway_dimse", "n-action-implicit", b"\2" + raw_dataset(req, implicit=True))
    put("gateway_dimse", "n-action-explicit", b"\5" + raw_dataset(req))

    # gateway_dataset: [selector: 0 implicit, 1 explicit, 2 big endian, 3 deflated][data set]
    ds = dataset()
    put("gateway_dataset", "implicit", b"\0" + raw_dataset(ds, implicit=True))
    put("gateway_dataset", "explicit", b"\1" + raw_dataset(ds))
    put("gateway_dataset", "big-endian", b"\2" + raw_dataset(ds, little=False))
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    put("gateway_dataset", "deflated", b"\3" + c.compress(raw_dataset(ds)) + c.flush())
    for n in ["sequence-never-closed.dcm", "value-length-beyond-file.dcm", "out-of-order-tags.dcm"]:
        if n in h:
            b = h[n]
            glen = struct.unpack("<I", b[140:144])[0]
            put("gateway_dataset", n, b"\1" + b[144 + glen:])

    # ingest_json: a registration, and DICOM JSON metadata alone
    meta = {
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "ANON^X"}]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00200011": {"vr": "IS", "Value": [2]},
        "00280008": {"vr": "IS", "Value": [3]},
        "00400275": {"vr": "SQ", "Value": [{"00400007": {"vr": "LO", "Value": ["x"]}}]},
    }
    reg = {
        "version": 1,
        "object_key": "studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm",
        "size": 1234,
        "sha256": "0" * 64,
        "study_uid": "1.2.3",
        "series_uid": "1.2.3.4",
        "sop_instance_uid": "1.2.3.4.5",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "metadata": meta,
    }
    put("ingest_json", "registration.json", json.dumps(reg).encode())
    put("ingest_json", "metadata.json", json.dumps(meta).encode())

    # qido_params: query strings
    put("qido_params", "study", b"PatientName=ANON*&00080020=20240101-&limit=5&includefield=all&fuzzymatching=true")
    put("qido_params", "uids", b"StudyInstanceUID=1.2,1.3%5C1.4&SOPInstanceUID=1.2.3&offset=10")
    put("qido_params", "series", b"Modality=CT&SeriesNumber=3&StudyTime=101010-&includefield=00100020,PatientID")

    # rendered_params: query strings, frame numbers, frame lists
    put("rendered_params", "window", b"window=40,400,sigmoid&viewport=256,256,0,0,128,128&quality=80")
    put("rendered_params", "frames", b"1,2,3")
    put("rendered_params", "frame", b"7")

    # stow_multipart: the Content-Type line, then the body
    b = b"seed-boundary"
    ct = b'multipart/related; type="application/dicom"; boundary=' + b + b"\r\n"
    ok = dataset(frames=2)
    ok.PatientIdentityRemoved = "YES"
    body = b"--" + b + b"\r\nContent-Type: application/dicom\r\n\r\n" + part10(ok) + b"\r\n--" + b + b"--\r\n"
    put("stow_multipart", "one-part", ct + body)
    two = (b"--" + b + b"\r\nContent-Type: application/dicom\r\n\r\n" + part10(ok, preamble=False)
           + b"\r\n--" + b + b"\r\nContent-Type: application/dicom\r\n\r\n" + h.get("frames-50m.dcm", b"")
           + b"\r\n--" + b + b"--\r\n")
    put("stow_multipart", "two-parts", ct + two)
    return 0


if __name__ == "__main__":
    sys.exit(main())
