#!/usr/bin/env python3
"""Send each hostile corpus file in its own association with pynetdicom.

Usage: hostile_send.py HOST PORT CALLED_AE FILE...

Only the file meta group is read (the data set is sent as stored, never
decoded by pydicom), proposing the file's own SOP class and transfer syntax.
Prints one JSON line per file: {"file": ..., "outcome": "status" | "rejected" |
"aborted" | "no-response" | "sender-refused" | "unreadable", "status": "0xC000" | null}.
Exit status 0 when every file was tried (the outcomes are judged by the test).
"""

import json
import sys

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE


def send(host, port, called, path):
    try:
        meta = read_file_meta_info(path)
        sop_class = str(meta.MediaStorageSOPClassUID)
        ts = str(meta.TransferSyntaxUID)
    except Exception as e:  # the meta group itself is unreadable
        return {"file": path, "outcome": "unreadable", "status": None, "error": str(e)[:200]}
    ae = AE(ae_title="HOSTILE")
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.network_timeout = 120
    ae.add_requested_context(sop_class, ts)
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        return {"file": path, "outcome": "rejected", "status": None}
    try:
        status = assoc.send_c_store(path)
    except Exception as e:
        # pynetdicom itself refused to send the file (a UID over 64
        # characters in the command, a data set it cannot walk): nothing
        # reached the gateway on this association
        outcome = "sender-refused" if assoc.is_established else "no-response"
        if assoc.is_established:
            assoc.release()
        return {"file": path, "outcome": outcome, "status": None, "error": str(e)[:200]}
    code = getattr(status, "Status", None)
    if assoc.is_aborted:
        out = {"file": path, "outcome": "aborted", "status": None}
    elif code is None:
        out = {"file": path, "outcome": "no-response", "status": None}
    else:
        out = {"file": path, "outcome": "status", "status": "0x%04X" % code}
    if assoc.is_established:
        assoc.release()
    return out


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, called = argv[1], int(argv[2]), argv[3]
    for f in argv[4:]:
        print(json.dumps(send(host, port, called, f)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
