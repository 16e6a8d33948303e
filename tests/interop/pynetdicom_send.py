#!/usr/bin/env python3
"""pynetdicom as a C-STORE SCU (a third sender, independent of dcmtk).

Usage: pynetdicom_send.py HOST PORT CALLED_AE FILE...

Sends every FILE in one association, proposing each file's own SOP class and
transfer syntax, and prints one JSON line {"sent": n, "success": n,
"failures": [...]}. Exit status 0 only if the association was accepted and
every C-STORE response was Success (0x0000).
"""

import json
import sys

from pydicom import dcmread
from pynetdicom import AE


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, called = argv[1], int(argv[2]), argv[3]
    files = argv[4:]
    metas = []
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        metas.append(
            (f, str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        )
    ae = AE(ae_title="PYNETDICOM")
    for ctx in sorted({(c, ts) for _, c, ts in metas}):
        ae.add_requested_context(ctx[0], ctx[1])
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 1
    ok = 0
    failures = []
    try:
        for f, _, _ in metas:
            # a path is sent as stored (no decoding / re-encoding by pydicom)
            status = assoc.send_c_store(f)
            code = getattr(status, "Status", None)
            if code == 0x0000:
                ok += 1
            else:
                failures.append(
                    {"file": f, "status": None if code is None else "0x%04X" % code}
                )
    finally:
        assoc.release()
    print(json.dumps({"sent": len(files), "success": ok, "failures": failures}))
    return 0 if ok == len(files) and not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
