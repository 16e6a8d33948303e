//! The gateway under attack from the hospital network. Each attack runs
//! (crafted PDUs over raw TCP, in threads) AT THE SAME TIME as a legitimate
//! dcmtk push, which must succeed; the gateway must stay alive and its
//! memory (VmRSS from /proc) stay bounded.
//!
//! - poison instances (sequences nested 10,000 deep, a deflated one nested
//!   3,000 deep, a deflate bomb): refused when pushed, quarantined with a
//!   reason when found in `pending/` at start-up (as an older gateway would
//!   have acknowledged them), and reported as an error per file by
//!   `mado-gateway deid`; every good instance still arrives;
//! - declared lengths of 4 GiB in command sets, data set heads (explicit,
//!   implicit, deflated) and N-ACTION data sets, random bytes, nesting in
//!   command sets and N-ACTIONs, N-ACTIONs of 65,536 references, a C-STORE
//!   that never ends;
//! - idle and slow clients: 200 silent connections, 200 sending 10 bytes,
//!   an A-ASSOCIATE-RQ one byte a second, an association trickling a PDU.

use super::common::*;
use crate::apps::{spawn_gateway, GatewayConfig, GatewayProc, ServerConfig};
use crate::bins::gateway_bin;
use crate::dcmtk::storescu_ok;
use crate::process::{run_with_timeout, scrub_env};
use crate::samples::SampleOptions;
use crate::storage::Storage;
use crate::util::{scaled, wait_for};
use anyhow::{anyhow, bail, ensure, Result};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CT: &str = uids::CT_IMAGE_STORAGE;
const EXPLICIT: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;
const IMPLICIT: &str = uids::IMPLICIT_VR_LITTLE_ENDIAN;
const DEFLATED: &str = uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
const COMMITMENT: &str = uids::STORAGE_COMMITMENT_PUSH_MODEL;

// ------------------------------------------------------------ raw DICOM UL

fn pdu(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn item(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn ae(s: &str) -> [u8; 16] {
    let mut a = [b' '; 16];
    a[..s.len()].copy_from_slice(s.as_bytes());
    a
}

/// A-ASSOCIATE-RQ proposing one presentation context (id 1).
fn associate_rq(abstract_syntax: &str, ts: &str) -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0, 0];
    b.extend_from_slice(&ae("MADO"));
    b.extend_from_slice(&ae("ATTACKER"));
    b.extend_from_slice(&[0u8; 32]);
    item(&mut b, 0x10, b"1.2.840.10008.3.1.1.1");
    let mut pc = vec![1, 0, 0, 0];
    item(&mut pc, 0x30, abstract_syntax.as_bytes());
    item(&mut pc, 0x40, ts.as_bytes());
    item(&mut b, 0x20, &pc);
    let mut ui = Vec::new();
    item(&mut ui, 0x51, &16384u32.to_be_bytes());
    item(&mut ui, 0x52, b"1.2.826.0.1.3680043.9.7433.1");
    item(&mut b, 0x50, &ui);
    pdu(0x01, &b)
}

/// P-DATA-TF with one PDV on presentation context 1.
fn pdata(command: bool, last: bool, data: &[u8]) -> Vec<u8> {
    let mut pdv = (data.len() as u32 + 2).to_be_bytes().to_vec();
    pdv.push(1);
    pdv.push(u8::from(command) | (u8::from(last) << 1));
    pdv.extend_from_slice(data);
    pdu(0x04, &pdv)
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}
fn ui(tag: Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(v))
}

fn encode_command(elems: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let mut out = Vec::new();
    InMemDicomObject::command_from_element_iter(elems)
        .write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("a command encodes");
    out
}

fn store_rq(sop_instance: &str) -> Vec<u8> {
    encode_command(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, CT),
        us(tags::COMMAND_FIELD, 0x0001),
        us(tags::MESSAGE_ID, 1),
        us(tags::PRIORITY, 0),
        us(tags::COMMAND_DATA_SET_TYPE, 0x0000),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ])
}

fn action_rq() -> Vec<u8> {
    encode_command(vec![
        ui(tags::REQUESTED_SOP_CLASS_UID, COMMITMENT),
        us(tags::COMMAND_FIELD, 0x0130),
        us(tags::MESSAGE_ID, 1),
        us(tags::COMMAND_DATA_SET_TYPE, 0x0000),
        ui(
            tags::REQUESTED_SOP_INSTANCE_UID,
            uids::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
        ),
        us(tags::ACTION_TYPE_ID, 1),
    ])
}

/// How an exchange ended, as the attacker saw it.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A response command with this status.
    Status(u16),
    /// A-ABORT, or the connection closed.
    Aborted,
}

struct Raw {
    s: TcpStream,
}

impl Raw {
    /// Connect from `src` (any 127/8 address: each is its own peer).
    fn connect(src: Ipv4Addr, port: u16) -> Result<Self> {
        // std cannot bind before connect; tokio's socket can
        let s = if src == Ipv4Addr::LOCALHOST {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_secs(10),
            )?
        } else {
            // (called on the blocking pool: the test's runtime drives it)
            let s = tokio::runtime::Handle::current().block_on(async {
                let t = tokio::net::TcpSocket::new_v4()?;
                t.bind(SocketAddr::from((src, 0)))?;
                t.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                    .await
            })?;
            let s = s.into_std()?;
            s.set_nonblocking(false)?;
            s
        };
        s.set_read_timeout(Some(scaled(Duration::from_secs(60))))?;
        s.set_nodelay(true)?;
        Ok(Self { s })
    }

    /// Connect and associate with one context; `Err` when not accepted.
    fn associate(src: Ipv4Addr, port: u16, abstract_syntax: &str, ts: &str) -> Result<Self> {
        let mut r = Self::connect(src, port)?;
        r.s.write_all(&associate_rq(abstract_syntax, ts))?;
        let (kind, body) = r.read_pdu()?.ok_or_else(|| anyhow!("closed"))?;
        ensure!(
            kind == 0x02,
            "association not accepted (PDU type {kind:#04x})"
        );
        // presentation context result: item 0x21, byte 2 of its content
        let mut i = 68;
        while i + 4 <= body.len() {
            let (t, n) = (
                body[i],
                u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize,
            );
            if t == 0x21 {
                ensure!(body.get(i + 6) == Some(&0), "context not accepted");
                return Ok(r);
            }
            i += 4 + n;
        }
        bail!("no presentation context result")
    }

    /// The next PDU (type, body), or `None` once the connection closed.
    fn read_pdu(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut h = [0u8; 6];
        if let Err(e) = self.s.read_exact(&mut h) {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => Ok(None),
                _ => Err(e.into()),
            };
        }
        let n = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
        ensure!(n <= 1 << 20, "PDU of {n} bytes from the gateway");
        let mut body = vec![0u8; n];
        match self.s.read_exact(&mut body) {
            Ok(()) => Ok(Some((h[0], body))),
            Err(_) => Ok(None),
        }
    }

    /// The gateway's answer to what was sent.
    fn answer(&mut self) -> Result<Answer> {
        let mut command = Vec::new();
        loop {
            match self.read_pdu()? {
                None | Some((0x07, _)) => return Ok(Answer::Aborted),
                Some((0x04, body)) => {
                    let mut i = 0;
                    while i + 6 <= body.len() {
                        let n = u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]])
                            as usize;
                        let ctl = body[i + 5];
                        command.extend_from_slice(&body[i + 6..i + 4 + n]);
                        if ctl & 0x03 == 0x03 {
                            let obj = InMemDicomObject::read_dataset_with_ts(
                                command.as_slice(),
                                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                            )?;
                            let status = obj
                                .get(tags::STATUS)
                                .ok_or_else(|| anyhow!("response without status"))?
                                .uint16()?;
                            return Ok(Answer::Status(status));
                        }
                        i += 4 + n;
                    }
                }
                Some((kind, _)) => bail!("unexpected PDU type {kind:#04x}"),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// Has the gateway closed the connection (within `wait`)?
    fn closed_within(&mut self, wait: Duration) -> bool {
        let _ = self.s.set_read_timeout(Some(wait));
        let mut b = [0u8; 256];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue, // e.g. an A-ABORT
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}

// ------------------------------------------------------------ payloads

/// `depth` nested undefined-length sequences of (FFFA,FFFA) (explicit VR
/// unless `implicit`), each in one undefined-length item.
fn nested(depth: usize, implicit: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 36);
    for _ in 0..depth {
        if implicit {
            out.extend_from_slice(b"\xfa\xff\xfa\xff\xff\xff\xff\xff");
        } else {
            out.extend_from_slice(b"\xfa\xff\xfa\xffSQ\0\0\xff\xff\xff\xff");
        }
        out.extend_from_slice(b"\xfe\xff\x00\xe0\xff\xff\xff\xff");
    }
    for _ in 0..depth {
        out.extend_from_slice(b"\xfe\xff\x0d\xe0\0\0\0\0");
        out.extend_from_slice(b"\xfe\xff\xdd\xe0\0\0\0\0");
    }
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

/// The identifying head of a CT data set (explicit VR LE), as the spool
/// checks it.
fn head(sop_instance: &str) -> Vec<u8> {
    let obj = InMemDicomObject::from_element_iter([
        ui(tags::SOP_CLASS_UID, CT),
        ui(tags::SOP_INSTANCE_UID, sop_instance),
        ui(tags::STUDY_INSTANCE_UID, "1.2.826.0.1.3680043.9.7433.9.1"),
        ui(tags::SERIES_INSTANCE_UID, "1.2.826.0.1.3680043.9.7433.9.2"),
    ]);
    let mut out = Vec::new();
    obj.write_dataset_with_ts(
        &mut out,
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .expect("encodes");
    out
}

/// Deflated (7FE0,0010) OB of `n` zero bytes after the head: a bomb.
fn deflate_bomb(sop_instance: &str, n: u32) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&head(sop_instance)).expect("deflate");
    e.write_all(b"\xe0\x7f\x10\x00OB\0\0").expect("deflate");
    e.write_all(&n.to_le_bytes()).expect("deflate");
    let zeros = vec![0u8; 1 << 20];
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(zeros.len());
        e.write_all(&zeros[..k]).expect("deflate");
        left -= k;
    }
    e.finish().expect("deflate")
}

/// N-ACTION data set: Transaction UID and `n` references (explicit VR LE).
fn commitment_request(n: usize) -> Vec<u8> {
    let items: Vec<InMemDicomObject> = (0..n)
        .map(|i| {
            InMemDicomObject::from_element_iter([
                ui(tags::REFERENCED_SOP_CLASS_UID, CT),
                ui(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    &format!("1.2.826.0.1.3680043.9.7433.5.{i}"),
                ),
            ])
        })
        .collect();
    let obj = InMemDicomObject::from_element_iter([
        ui(tags::TRANSACTION_UID, "1.2.826.0.1.3680043.9.7433.6.1"),
        DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(items),
        ),
    ]);
    let mut out = Vec::new();
    obj.write_dataset_with_ts(
        &mut out,
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .expect("encodes");
    out
}

fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Send `data` as a data set in PDUs of at most 16 KiB.
fn send_data_set(r: &mut Raw, data: &[u8]) -> std::io::Result<()> {
    let chunks: Vec<&[u8]> = data.chunks(16 * 1024 - 6).collect();
    let last = chunks.len().saturating_sub(1);
    for (i, c) in chunks.iter().enumerate() {
        r.send(&pdata(false, i == last, c))?;
    }
    if data.is_empty() {
        r.send(&pdata(false, true, &[]))?;
    }
    Ok(())
}

/// One C-STORE of `data` (in `ts`) on a fresh association.
fn attack_store(port: u16, ts: &str, data: &[u8]) -> Result<Answer> {
    let mut r = Raw::associate(Ipv4Addr::LOCALHOST, port, CT, ts)?;
    r.send(&pdata(
        true,
        true,
        &store_rq("1.2.826.0.1.3680043.9.7433.7.1"),
    ))?;
    if send_data_set(&mut r, data).is_err() {
        return Ok(Answer::Aborted);
    }
    r.answer()
}

/// One N-ACTION of `data` on a fresh association.
fn attack_action(port: u16, data: &[u8]) -> Result<Answer> {
    let mut r = Raw::associate(Ipv4Addr::LOCALHOST, port, COMMITMENT, EXPLICIT)?;
    r.send(&pdata(true, true, &action_rq()))?;
    if send_data_set(&mut r, data).is_err() {
        return Ok(Answer::Aborted);
    }
    r.answer()
}

/// One command set of raw bytes on a Verification association.
fn attack_command(port: u16, command: &[u8]) -> Result<Answer> {
    let mut r = Raw::associate(Ipv4Addr::LOCALHOST, port, uids::VERIFICATION, IMPLICIT)?;
    if r.send(&pdata(true, true, command)).is_err() {
        return Ok(Answer::Aborted);
    }
    r.answer()
}

// ------------------------------------------------------------ the gateway

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Highest VmRSS of `pid` while the returned flag is false.
fn watch_rss(pid: u32) -> (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let (s, p) = (stop.clone(), peak.clone());
    let h = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if let Some(k) = vm_rss_kib(pid) {
                p.fetch_max(k, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, peak, h)
}

/// A gateway without upload (instances stay in spool/pending/), with
/// `dicom` keys overridden.
async fn gateway_only(dicom: toml::Table) -> Result<(GatewayProc, tempfile::TempDir)> {
    let objects = tempfile::Builder::new()
        .prefix("mado-e2e-objects-")
        .tempdir()?;
    let storage = Storage::Local {
        path: objects.path().to_path_buf(),
    };
    let mut g = GatewayConfig::new("http://127.0.0.1:9", "unused-token", storage);
    g.extra = toml::toml! {
        [upload]
        enabled = false
    };
    g.extra.insert("dicom".into(), dicom.into());
    Ok((spawn_gateway(g).await?, objects))
}

fn alive(gw: &mut GatewayProc) -> Result<()> {
    if let Some(st) = gw.proc.try_status() {
        bail!("the gateway died: {st}\n{}", gw.proc.logs());
    }
    Ok(())
}

fn echo_ok(port: u16) -> Result<()> {
    let bin = crate::dcmtk::dcmtk_tool("echoscu")?;
    let mut cmd = Command::new(bin);
    cmd.args(["-aet", "MADOTEST", "-aec", "MADO", "-to", "30", "-ta", "30"])
        .args(["127.0.0.1", &port.to_string()]);
    let (st, out, err) = run_with_timeout(cmd, scaled(Duration::from_secs(60)))?;
    ensure!(st.success(), "echoscu failed: {st}\n{out}\n{err}");
    Ok(())
}

fn count(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

/// `files` pushed by storescu (one association), each `times` times.
fn push_ok(files: &[PathBuf], times: usize, port: u16) -> Result<usize> {
    let all: Vec<PathBuf> = (0..times).flat_map(|_| files.iter().cloned()).collect();
    storescu_ok(&all, port)?;
    Ok(all.len())
}

// ------------------------------------------------------------ 12: crafted PDUs

/// Every crafted PDU of the report, each several times, while storescu
/// pushes: no crash, memory bounded, every push acknowledged, nothing
/// left in incoming/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_pdus_neither_stop_nor_bloat_the_gateway() {
    let (mut gw, _objects) = gateway_only(toml::toml! {
        max_instance_bytes = 16777216
    })
    .await
    .unwrap();
    let port = gw.dicom_port;
    let (_dir, set) = samples(&SampleOptions {
        ct_slices: 5,
        ct2_slices: 0,
        cr_images: 0,
        seed: 41,
        japanese: false,
    })
    .unwrap();
    let files = set.paths();
    let pid = gw.proc.pid().unwrap();
    // warm up, then the baseline
    push_ok(&files, 1, port).unwrap();
    let base = vm_rss_kib(pid).unwrap();
    let (stop, peak, watcher) = watch_rss(pid);

    let attacks = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        let mut seen = Vec::new();
        fn note(seen: &mut Vec<String>, what: &str, a: Result<Answer>) {
            seen.push(format!("{what}: {a:?}"));
        }
        // the C-STORE that never ends: 64 MiB against a 16 MiB limit
        {
            let mut r = Raw::associate(Ipv4Addr::LOCALHOST, port, CT, EXPLICIT)?;
            r.send(&pdata(
                true,
                true,
                &store_rq("1.2.826.0.1.3680043.9.7433.7.9"),
            ))?;
            let mut data = head("1.2.826.0.1.3680043.9.7433.7.9");
            data.extend_from_slice(b"\xe0\x7f\x10\x00OB\0\0\xf0\xff\xff\xff");
            r.send(&pdata(false, false, &data))?;
            let chunk = vec![0u8; 16 * 1024 - 6];
            let mut sent = 0usize;
            let mut refused = false;
            while sent < 64 << 20 {
                if r.send(&pdata(false, false, &chunk)).is_err() {
                    refused = true;
                    break;
                }
                sent += chunk.len();
            }
            ensure!(
                refused || r.closed_within(Duration::from_secs(10)),
                "a data set over max_instance_bytes was not refused"
            );
            seen.push(format!("endless C-STORE: refused after {} KiB", sent >> 10));
        }
        for round in 0..3 {
            // 4 GiB declared in a C-ECHO command (78 bytes)
            let mut echo = b"\x00\x00\x00\x00\x04\x00\x00\x00\x42\x00\x00\x00".to_vec();
            echo.extend_from_slice(b"\x00\x00\x02\x00\xf0\xff\xff\xff");
            echo.resize(78, b'1');
            note(
                &mut seen,
                "C-ECHO declaring 4 GiB",
                attack_command(port, &echo),
            );
            // a C-ECHO command nested 2,000 deep
            note(
                &mut seen,
                "C-ECHO nested 2,000",
                attack_command(port, &nested(2000, true)),
            );
            // data set heads declaring 4 GiB
            let mut ex = head("1.2.826.0.1.3680043.9.7433.7.1");
            ex.extend_from_slice(b"\x09\x00\x10\x10UN\0\0\xf0\xff\xff\xff");
            ex.extend_from_slice(&[0u8; 64]);
            let a = attack_store(port, EXPLICIT, &ex);
            ensure!(
                a.as_ref().ok() != Some(&Answer::Status(0)),
                "explicit head stored: {a:?}"
            );
            note(&mut seen, "explicit head 4 GiB", a);
            let a = attack_store(port, IMPLICIT, b"\x08\x00\x16\x00\xf0\xff\xff\xff1.2.840");
            ensure!(
                a.as_ref().ok() != Some(&Answer::Status(0)),
                "implicit head stored: {a:?}"
            );
            note(&mut seen, "implicit head 4 GiB", a);
            let a = attack_store(port, DEFLATED, &deflate(&ex));
            ensure!(
                a.as_ref().ok() != Some(&Answer::Status(0)),
                "deflated head stored: {a:?}"
            );
            note(&mut seen, "deflated head 4 GiB", a);
            // a 492-byte deflated C-STORE nested 3,000 deep
            let mut deep = head("1.2.826.0.1.3680043.9.7433.7.1");
            deep.extend_from_slice(&nested(3000, false));
            let a = attack_store(port, DEFLATED, &deflate(&deep));
            ensure!(
                a.as_ref().ok() == Some(&Answer::Status(0xC000)),
                "deflated nest: {a:?}"
            );
            note(&mut seen, "deflated nested 3,000", a);
            // a deflate bomb (64 MiB + 1 over the cap, well below 512 MiB: same path)
            let a = attack_store(
                port,
                DEFLATED,
                &deflate_bomb("1.2.826.0.1.3680043.9.7433.7.1", 80 << 20),
            );
            ensure!(
                a.as_ref().ok() == Some(&Answer::Status(0xC000)),
                "deflate bomb: {a:?}"
            );
            note(&mut seen, "deflate bomb", a);
            // N-ACTION data sets
            let mut big = b"\x08\x00\x95\x11UI\x0c\x00".to_vec();
            big.extend_from_slice(b"1.2.3.4.5.6\0");
            big.extend_from_slice(b"\x08\x00\x99\x11UN\0\0\xf0\xff\xff\xff");
            let a = attack_action(port, &big);
            ensure!(
                a.as_ref().ok() == Some(&Answer::Status(0x0115)),
                "N-ACTION 4 GiB: {a:?}"
            );
            note(&mut seen, "N-ACTION 4 GiB", a);
            let a = attack_action(port, &noise(4000, 77 + round));
            ensure!(
                !matches!(a, Ok(Answer::Status(0))),
                "N-ACTION of random bytes accepted: {a:?}"
            );
            note(&mut seen, "N-ACTION random", a);
            let a = attack_action(port, &nested(1500, false));
            ensure!(
                !matches!(a, Ok(Answer::Status(0))),
                "N-ACTION nested accepted: {a:?}"
            );
            note(&mut seen, "N-ACTION nested 1,500", a);
        }
        // 24 N-ACTIONs of 65,536 references
        let huge = commitment_request(65_536);
        for _ in 0..24 {
            let a = attack_action(port, &huge);
            ensure!(
                a.as_ref().ok() == Some(&Answer::Status(0x0213)),
                "65,536 references: {a:?}"
            );
        }
        seen.push("24 N-ACTIONs of 65,536 references: 0x0213".into());
        Ok(seen)
    });
    // the modality pushes meanwhile
    let pushed = tokio::task::spawn_blocking({
        let files = files.clone();
        move || -> Result<usize> {
            let mut n = 0;
            for _ in 0..4 {
                n += push_ok(&files, 2, port)?;
                echo_ok(port)?;
            }
            Ok(n)
        }
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    let seen = attacks
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    alive(&mut gw).unwrap();
    echo_ok(port).unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(base);
    println!("attacks: {seen:#?}\nVmRSS: base {base} KiB, peak +{grown} KiB");
    assert!(
        grown < 256 * 1024,
        "the gateway grew by {grown} KiB under attack\n{seen:#?}"
    );
    assert_eq!(
        count(&gw.spool_dir.join("pending"), ".dcm"),
        pushed + files.len()
    );
    assert_eq!(
        count(&gw.spool_dir.join("incoming"), ".tmp"),
        0,
        "temp file left"
    );
    assert!(
        !gw.spool_dir.join("commitment-pending").exists()
            || count(&gw.spool_dir.join("commitment-pending"), ".json") == 0
    );
}

// ------------------------------------------------------------ 12: idle and slow

/// 200 silent connections and 200 sending 10 bytes (from other addresses),
/// an A-ASSOCIATE-RQ one byte a second, an association trickling one byte a
/// second: the modality's C-ECHO and a 50-instance push go through, the
/// slow ones are closed by the set-up deadline and the PDU deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_hold_the_slots() {
    let (mut gw, _objects) = gateway_only(toml::toml! {
        association_timeout_secs = 3
        pdu_timeout_secs = 3
    })
    .await
    .unwrap();
    let port = gw.dicom_port;
    let (_dir, set) = samples(&SampleOptions {
        ct_slices: 10,
        ct2_slices: 0,
        cr_images: 0,
        seed: 43,
        japanese: false,
    })
    .unwrap();
    let files = set.paths();
    let pid = gw.proc.pid().unwrap();
    let base = vm_rss_kib(pid).unwrap();
    let (stop, peak, watcher) = watch_rss(pid);

    // slow clients, in their own thread: they keep their sockets
    let started = Instant::now();
    let (flooded_tx, flooded) = tokio::sync::oneshot::channel::<()>();
    let holders = tokio::task::spawn_blocking(move || -> Result<(Vec<Raw>, Duration, Duration)> {
        let mut held = Vec::new();
        for i in 0..200u32 {
            // silent, all from 127.0.0.2
            if let Ok(r) = Raw::connect(Ipv4Addr::new(127, 0, 0, 2), port) {
                held.push(r);
            }
            // 10 bytes, from 50 addresses
            let src = Ipv4Addr::new(127, 0, 1, 1 + (i % 50) as u8);
            if let Ok(mut r) = Raw::connect(src, port) {
                let _ = r.send(&associate_rq(CT, EXPLICIT)[..10]);
                held.push(r);
            }
        }
        let _ = flooded_tx.send(());
        // one byte a second: set-up deadline
        let mut slow = Raw::connect(Ipv4Addr::new(127, 0, 0, 3), port)?;
        let rq = associate_rq(uids::VERIFICATION, IMPLICIT);
        let t0 = Instant::now();
        let mut closed_after = None;
        for b in &rq {
            if slow.send(std::slice::from_ref(b)).is_err()
                || slow.closed_within(Duration::from_secs(1))
            {
                closed_after = Some(t0.elapsed());
                break;
            }
        }
        let setup =
            closed_after.ok_or_else(|| anyhow!("a trickled A-ASSOCIATE-RQ was never closed"))?;
        // associated, then a PDU one byte a second
        let mut trickle = Raw::associate(
            Ipv4Addr::new(127, 0, 0, 4),
            port,
            uids::VERIFICATION,
            IMPLICIT,
        )?;
        let echo = encode_command(vec![
            ui(tags::AFFECTED_SOP_CLASS_UID, uids::VERIFICATION),
            us(tags::COMMAND_FIELD, 0x0030),
            us(tags::MESSAGE_ID, 1),
            us(tags::COMMAND_DATA_SET_TYPE, 0x0101),
        ]);
        let p = pdata(true, true, &echo);
        let t0 = Instant::now();
        let mut closed_after = None;
        for b in &p {
            if trickle.send(std::slice::from_ref(b)).is_err()
                || trickle.closed_within(Duration::from_secs(1))
            {
                closed_after = Some(t0.elapsed());
                break;
            }
        }
        let pdu = closed_after.ok_or_else(|| anyhow!("a trickled PDU was never cut off"))?;
        Ok((held, setup, pdu))
    });
    // the modality, meanwhile (once the 400 slow connections are in)
    let _ = flooded.await;
    let pushed = tokio::task::spawn_blocking({
        let files = files.clone();
        move || -> Result<usize> {
            echo_ok(port)?;
            let n = push_ok(&files, 5, port)?;
            echo_ok(port)?;
            Ok(n)
        }
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    let push_time = started.elapsed();
    let (held, setup, pdu) = holders
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    println!(
        "pushed {pushed} in {push_time:?}; trickled A-ASSOCIATE-RQ closed after {setup:?}, trickled PDU after {pdu:?}; {} slow connections held",
        held.len()
    );
    assert!(
        setup < scaled(Duration::from_secs(3)) + Duration::from_secs(3),
        "{setup:?}"
    );
    assert!(
        pdu < scaled(Duration::from_secs(3)) + Duration::from_secs(3),
        "{pdu:?}"
    );
    // every slow connection is gone after the set-up deadline
    let mut held = held;
    let mut open = 0;
    for r in &mut held {
        if !r.closed_within(scaled(Duration::from_secs(4))) {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "slow connections still open after the set-up deadline"
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    alive(&mut gw).unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(base);
    println!("VmRSS: base {base} KiB, peak +{grown} KiB");
    assert!(grown < 128 * 1024, "the gateway grew by {grown} KiB");
    assert_eq!(count(&gw.spool_dir.join("pending"), ".dcm"), pushed);
}

// ------------------------------------------------------------ 9: poison

/// `file` with (FFFA,FFFA) sequences nested `depth` deep appended (after
/// Pixel Data, so the identifying head is intact).
fn poisoned(file: &Path, depth: usize, out: &Path) -> Result<()> {
    let mut bytes = std::fs::read(file)?;
    // the samples are Explicit VR Little Endian
    bytes.extend_from_slice(&nested(depth, false));
    std::fs::write(out, bytes)?;
    Ok(())
}

/// A Part 10 file in `ts` holding `dataset` (already encoded).
fn part10(sop_instance: &str, ts: &str, dataset: &[u8], out: &Path) -> Result<()> {
    let meta = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(CT)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(ts)
        .build()?;
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    meta.write(&mut f)?;
    f.extend_from_slice(dataset);
    std::fs::write(out, f)?;
    Ok(())
}

/// The data set of a Part 10 file, as it travels.
fn dataset_of(file: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(file)?;
    let gl = u32::from_le_bytes(bytes[140..144].try_into()?) as usize;
    Ok(bytes[144 + gl..].to_vec())
}

fn gw_deid(
    config: &Path,
    input: &Path,
    output: &Path,
) -> Result<(std::process::ExitStatus, String, String)> {
    let mut cmd = Command::new(gateway_bin()?);
    scrub_env(&mut cmd);
    cmd.arg("--config")
        .arg(config)
        .env("MADO_GATEWAY__VAULT__ENABLED", "false")
        .args(["deid"])
        .arg(input)
        .arg(output);
    run_with_timeout(cmd, scaled(Duration::from_secs(120)))
}

/// One poison instance pushed between good ones is refused (0xC000) and the
/// gateway lives on; poison already in `pending/` (acknowledged by an older
/// gateway: nested 10,000 deep, deflated nested 3,000 deep, a 512 MiB
/// deflate bomb) is quarantined with its reason after a restart while every
/// good instance arrives; `mado-gateway deid` reports an error for each
/// poison file and de-identifies the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_instances_never_stop_the_pipeline() {
    let objects = tempfile::Builder::new()
        .prefix("mado-e2e-objects-")
        .tempdir()
        .unwrap();
    let storage = Storage::Local {
        path: objects.path().to_path_buf(),
    };
    let (dir, set) = samples(&SampleOptions {
        ct_slices: 4,
        ct2_slices: 0,
        cr_images: 0,
        seed: 47,
        japanese: false,
    })
    .unwrap();
    let spool_home = tempfile::Builder::new()
        .prefix("mado-e2e-spool-")
        .tempdir()
        .unwrap();
    let spool = spool_home.path().join("spool");
    let server = crate::apps::spawn_server(ServerConfig {
        storage: Some(storage.clone()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let mut g = GatewayConfig::new(&server.base_url, &server.cfg.gateway_token, storage.clone());
    g.extra = fast_upload_retries();
    g.spool_dir = Some(spool.clone());
    let mut gw = spawn_gateway(g.clone()).await.unwrap();
    let port = gw.dicom_port;

    let good = set.paths();
    let poison = dir.path().join("poison.dcm");
    poisoned(&good[0], 10_000, &poison).unwrap();
    // good, poison (refused, never acknowledged), good
    storescu_ok(&good[..2], port).unwrap();
    let a = tokio::task::spawn_blocking({
        let ds = dataset_of(&poison).unwrap();
        let sop = set.files[0].sop_instance_uid.clone();
        move || -> Result<Answer> {
            let mut r = Raw::associate(Ipv4Addr::LOCALHOST, port, CT, EXPLICIT)?;
            r.send(&pdata(true, true, &store_rq(&sop)))?;
            send_data_set(&mut r, &ds)?;
            r.answer()
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(a, Answer::Status(0xC000), "the poison push");
    alive(&mut gw).unwrap();
    storescu_ok(&good[2..], port).unwrap();
    let keys = wait_for_objects(&storage, good.len(), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    assert_eq!(keys.len(), good.len());

    // an older gateway had acknowledged poison: it is in pending/ at start-up
    drop(gw);
    let pending = spool.join("pending");
    let ids = ["a0", "b1", "c2"].map(|p| format!("{p}{}", "0".repeat(30)));
    std::fs::copy(&poison, pending.join(format!("{}.dcm", ids[0]))).unwrap();
    let mut deep = head("1.2.826.0.1.3680043.9.7433.8.1");
    deep.extend_from_slice(&nested(3000, false));
    part10(
        "1.2.826.0.1.3680043.9.7433.8.1",
        DEFLATED,
        &deflate(&deep),
        &pending.join(format!("{}.dcm", ids[1])),
    )
    .unwrap();
    let bomb = deflate_bomb("1.2.826.0.1.3680043.9.7433.8.2", 512 << 20);
    assert!(bomb.len() < 1 << 20, "bomb of {} bytes", bomb.len());
    part10(
        "1.2.826.0.1.3680043.9.7433.8.2",
        DEFLATED,
        &bomb,
        &pending.join(format!("{}.dcm", ids[2])),
    )
    .unwrap();
    // and more good ones arrive after the restart
    let (_dir2, more) = samples(&SampleOptions {
        ct_slices: 3,
        ct2_slices: 0,
        cr_images: 0,
        seed: 48,
        japanese: false,
    })
    .unwrap();
    let mut gw = spawn_gateway(g.clone()).await.unwrap();
    let pid = gw.proc.pid().unwrap();
    let (stop, peak, watcher) = watch_rss(pid);
    storescu_ok(&more.paths(), gw.dicom_port).unwrap();
    wait_for_objects(
        &storage,
        good.len() + more.files.len(),
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    let quarantine = spool.join("quarantine");
    wait_for(
        "the poison in quarantine/",
        scaled(Duration::from_secs(60)),
        || {
            let q = quarantine.clone();
            async move { Ok((count(&q, ".reason") == 3).then_some(())) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.proc.logs()));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    alive(&mut gw).unwrap();
    echo_ok(gw.dicom_port).unwrap();
    let reason =
        |id: &str| std::fs::read_to_string(quarantine.join(format!("{id}.reason"))).unwrap();
    assert!(
        reason(&ids[0]).contains("nested deeper than"),
        "{}",
        reason(&ids[0])
    );
    assert!(
        reason(&ids[1]).contains("nested deeper than"),
        "{}",
        reason(&ids[1])
    );
    assert!(
        reason(&ids[2]).contains("inflates to more than"),
        "{}",
        reason(&ids[2])
    );
    let peak_kib = peak.load(Ordering::Relaxed);
    println!("gateway VmRSS peak while processing the poison: {peak_kib} KiB");
    assert!(peak_kib < 512 * 1024, "VmRSS {peak_kib} KiB");
    assert_eq!(count(&pending, ".dcm"), 0);

    // the batch command on a directory holding them
    let input = dir.path().join("batch-in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(&good[0], input.join("good.dcm")).unwrap();
    std::fs::copy(&poison, input.join("poison.dcm")).unwrap();
    for (i, id) in ids.iter().enumerate().skip(1) {
        std::fs::copy(
            quarantine.join(format!("{id}.dcm")),
            input.join(format!("poison{i}.dcm")),
        )
        .unwrap();
    }
    let output = dir.path().join("batch-out");
    let (st, out, err) = gw_deid(&gw.config_path, &input, &output).unwrap();
    assert_eq!(st.code(), Some(1), "{st}\n{out}\n{err}");
    assert!(out.contains("de-identified: 1"), "{out}");
    assert!(out.contains("errors: 3"), "{out}");
    for (file, why) in [
        ("poison.dcm", "nested deeper than"),
        ("poison1.dcm", "nested deeper than"),
        ("poison2.dcm", "inflates to more than"),
    ] {
        assert!(
            out.lines().any(|l| l.contains(file) && l.contains(why)),
            "{file}: {why}\n{out}"
        );
    }
    assert!(output.join("good.dcm").is_file());
}
