#!/usr/bin/env python3
"""DICOMweb benchmark: Mado vs Orthanc on the same series (driven by
scripts/bench-dicomweb.sh). Keep-alive sessions, median of N requests.

usage: bench_dicomweb.py --mado URL --orthanc URL --files DIR --user U --password P --token T
"""
import argparse
import concurrent.futures as cf
import glob
import os
import re
import statistics
import subprocess
import sys
import time

import pydicom
import requests

OCTET = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'


def login(base, user, password):
    s = requests.Session()
    page = s.get(f"{base}/login").text
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    if not m:
        sys.exit("no csrf field on the login page")
    r = s.post(f"{base}/login", data={"username": user, "password": password, "csrf": m.group(1)})
    r.raise_for_status()
    return s


def stow(base, token, paths, batch=50):
    for i in range(0, len(paths), batch):
        boundary = "benchboundary0123456789"
        body = b""
        for p in paths[i : i + batch]:
            with open(p, "rb") as f:
                body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        r = requests.post(
            f"{base}/dicomweb/studies",
            data=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
        )
        if r.status_code != 200:
            sys.exit(f"STOW to Mado failed: {r.status_code} {r.text[:300]}")


def orthanc_upload(base, paths):
    s = requests.Session()
    for p in paths:
        with open(p, "rb") as f:
            r = s.post(f"{base}/instances", data=f.read())
        r.raise_for_status()


def cookie_header(session):
    """The Cookie header value of a logged-in requests session."""
    return "; ".join(f"{k}={v}" for k, v in session.cookies.items())


def httpbench_cmd(httpbench, headers, cookie, *extra):
    cmd = [httpbench, *extra]
    for k, v in headers.items():
        cmd += ["--header", f"{k}: {v}"]
    if cookie:
        cmd += ["--header", f"Cookie: {cookie}"]
    return cmd


def median_ms_native(httpbench, url, headers, n, cookie=None):
    """Median latency (ms) of n sequential keep-alive requests, after 3
    warm-up requests, measured by the compiled client (mado-httpbench)."""
    cmd = httpbench_cmd(httpbench, headers, cookie, "--latency")
    warm = subprocess.run(cmd, input="\n".join([url] * 3), capture_output=True, text=True)
    if warm.returncode != 0:
        m = re.search(r"HTTP (\d{3})", warm.stderr)
        return None, int(m.group(1)) if m else warm.stderr.strip()[:80]
    out = subprocess.run(cmd, input="\n".join([url] * n), capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip()[:80]
    return float(out.stdout.strip()), 200


def median_ms(session, url, headers, n):
    for _ in range(3):
        r = session.get(url, headers=headers)
        if r.status_code != 200:
            return None, r.status_code
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.get(url, headers=headers)
        r.content
        times.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            return None, r.status_code
    return statistics.median(times), 200


def throughput_native(httpbench, urls, headers, clients, cookie=None):
    """Requests/s measured by the compiled keep-alive client (mado-httpbench)."""
    cmd = httpbench_cmd(httpbench, headers, cookie, "--clients", str(clients))
    out = subprocess.run(cmd, input="\n".join(urls), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"mado-httpbench failed: {out.stderr.strip()[:300]}")
    return float(out.stdout.strip())


def throughput(make_session, urls, headers, clients):
    sessions = [make_session() for _ in range(clients)]
    chunks = [urls[i::clients] for i in range(clients)]

    def run(i):
        s = sessions[i]
        for u in chunks[i]:
            r = s.get(u, headers=headers)
            r.content
            if r.status_code != 200:
                raise RuntimeError(f"{u}: {r.status_code}")

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex:
        list(ex.map(run, range(clients)))
    return len(urls) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mado", required=True)
    ap.add_argument("--orthanc", required=True)
    ap.add_argument("--files", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--httpbench", help="path of mado-httpbench (else Python threads)")
    a = ap.parse_args()

    paths = sorted(glob.glob(os.path.join(a.files, "*.dcm")))
    if not paths:
        sys.exit(f"no .dcm files in {a.files}")
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    st, se = first.StudyInstanceUID, first.SeriesInstanceUID
    sops = []
    for p in paths:
        d = pydicom.dcmread(p, stop_before_pixels=True)
        sops.append((int(d.get("InstanceNumber", 0) or 0), d.SOPInstanceUID))
    sops = [s for _, s in sorted(sops)]
    mid = sops[len(sops) // 2]
    print(f"series: {len(paths)} instances, {first.Rows}x{first.Columns}", flush=True)

    t = time.perf_counter()
    orthanc_upload(a.orthanc, paths)
    print(f"Orthanc upload: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    stow(a.mado, a.token, paths)
    print(f"Mado STOW: {time.perf_counter() - t:.1f} s", flush=True)

    mado = login(a.mado, a.user, a.password)
    orth = requests.Session()
    M = f"{a.mado}/dicomweb"
    O = f"{a.orthanc}/dicom-web"
    inst = f"/studies/{st}/series/{se}/instances/{mid}"
    cases = [
        ("series metadata", f"/studies/{st}/series/{se}/metadata", {"Accept": "application/dicom+json"}, 0.1),
        ("QIDO instances of series", f"/studies/{st}/series/{se}/instances", {"Accept": "application/dicom+json"}, 0.1),
        ("rendered JPEG", f"{inst}/rendered", {"Accept": "image/jpeg"}, 1.0),
        ("rendered PNG", f"{inst}/rendered", {"Accept": "image/png"}, 0.1),
        ("windowed JPEG 40,400", f"{inst}/rendered?window=40,400,linear", {"Accept": "image/jpeg"}, 1.0),
        ("one native frame", f"{inst}/frames/1", {"Accept": OCTET}, 1.0),
    ]
    rows = []
    print(f"\n(median of {a.n} sequential keep-alive requests, {'compiled client' if a.httpbench else 'Python requests'})")
    print(f"{'case':32} {'Mado ms':>9} {'Orthanc ms':>11} {'ratio':>7}  target", flush=True)
    mado_cookie = cookie_header(mado)
    for name, path, hdr, target in cases:
        if a.httpbench:
            m, ms = median_ms_native(a.httpbench, M + path, hdr, a.n, mado_cookie)
            o, os_ = median_ms_native(a.httpbench, O + path, hdr, a.n)
        else:
            m, ms = median_ms(mado, M + path, hdr, a.n)
            o, os_ = median_ms(orth, O + path, hdr, a.n)
        ratio = (m / o) if (m and o) else None
        ok = "ok" if (ratio is not None and ratio <= target) else "MISS"
        line = f"{name:32} {m if m else ms!s:>9.9} {o if o else os_!s:>11.11} {ratio if ratio else float('nan'):>7.3f}  <= {target}x {ok}"
        if m:
            line = f"{name:32} {m:9.2f} " + (f"{o:11.2f} {ratio:7.3f}  <= {target}x {ok}" if o else f"{'HTTP ' + str(os_):>11} {'':>7}  (Orthanc n/a)")
        print(line, flush=True)
        rows.append((name, m, o, ratio))

    hdr = {"Accept": "image/jpeg"}
    client = "compiled keep-alive client" if a.httpbench else "Python threads"
    print(f"\n({client}; one connection per client; median of 3 passes)")
    print(f"{'all rendered JPEG (img/s)':32} {'Mado':>9} {'Orthanc':>11} {'ratio':>7}  target")
    # A distinct quality per pass, so that no encoded answer is reused (and
    # Mado keeps no decoded uncompressed slice: every pass decodes). Each
    # row is the median of three passes, Mado and Orthanc alternating, so
    # that a slow moment of the machine hits both alike.
    rounds = 3
    quality = 90
    for clients in (1, 4):
        rates_m, rates_o = [], []
        for _ in range(rounds):
            quality -= 1
            urls_m = [f"{M}/studies/{st}/series/{se}/instances/{s}/rendered?quality={quality}" for s in sops]
            urls_o = [f"{O}/studies/{st}/series/{se}/instances/{s}/rendered?quality={quality}" for s in sops]
            if a.httpbench:
                cookie = cookie_header(login(a.mado, a.user, a.password))
                rates_m.append(throughput_native(a.httpbench, urls_m, hdr, clients, cookie))
                rates_o.append(throughput_native(a.httpbench, urls_o, hdr, clients))
            else:
                rates_m.append(throughput(lambda: login(a.mado, a.user, a.password), urls_m, hdr, clients))
                rates_o.append(throughput(requests.Session, urls_o, hdr, clients))
        tm, to = statistics.median(rates_m), statistics.median(rates_o)
        runs = " ".join(f"{m:.0f}/{o:.0f}" for m, o in zip(rates_m, rates_o))
        print(f"{clients} client(s){'':22} {tm:9.1f} {to:11.1f} {tm / to:7.2f}  >= 2x {'ok' if tm / to >= 2 else 'MISS'}  (runs {runs})", flush=True)


if __name__ == "__main__":
    main()
