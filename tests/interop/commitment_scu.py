"""Storage Commitment Push Model SCU (pynetdicom) against mado-gateway.

Sends one N-ACTION-RQ (Action Type 1) for the given SOP instances and waits
for the N-EVENT-REPORT-RQ, either on the same association (--mode same) or
on a new association the gateway opens to our own listener (--mode new,
--listen-port; the requesting association is released right after the
N-ACTION-RSP). Prints one JSON line:
{"action_status": int, "event_type": int, "transaction_uid": str,
 "committed": [uid...], "failed": [[uid, reason]...], "same_association": bool}
Exit status 0 when a report arrived, 1 otherwise.
"""

import argparse
import json
import sys
import threading

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--aet", default="MODALITY")
    p.add_argument("--aec", default="MADO")
    p.add_argument("--mode", choices=["same", "new"], default="same")
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--sop-class", required=True)
    p.add_argument("uids", nargs="+")
    a = p.parse_args()

    received = threading.Event()
    result = {}

    def on_report(event):
        ds = event.event_information
        result["event_type"] = event.event_type
        result["transaction_uid"] = str(ds.get("TransactionUID", ""))
        result["committed"] = [
            str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", [])
        ]
        result["failed"] = [
            [str(i.ReferencedSOPInstanceUID), int(i.FailureReason)]
            for i in ds.get("FailedSOPSequence", [])
        ]
        result["same_association"] = event.assoc.is_requestor
        received.set()
        return 0x0000, None

    ae = AE(ae_title=a.aet)
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    ae.network_timeout = a.timeout + 30
    ae.add_requested_context(StorageCommitmentPushModel)
    server = None
    if a.mode == "new":
        # the gateway connects back and takes the SCP role (role selection)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        server = ae.start_server(
            ("127.0.0.1", a.listen_port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
        )

    assoc = ae.associate(
        a.host, a.port, ae_title=a.aec, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}))
        return 1
    tx = generate_uid()
    ds = Dataset()
    ds.TransactionUID = tx
    refs = []
    for uid in a.uids:
        item = Dataset()
        item.ReferencedSOPClassUID = a.sop_class
        item.ReferencedSOPInstanceUID = uid
        refs.append(item)
    ds.ReferencedSOPSequence = refs
    status, _reply = assoc.send_n_action(
        ds, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
    )
    result["action_status"] = int(status.Status) if "Status" in status else -1
    result["sent_transaction_uid"] = tx
    if a.mode == "new":
        assoc.release()
        got = received.wait(a.timeout)
    else:
        got = received.wait(a.timeout)
        if assoc.is_established:
            assoc.release()
    if server is not None:
        server.shutdown()
    print(json.dumps(result), flush=True)
    return 0 if got else 1


if __name__ == "__main__":
    sys.exit(main())
