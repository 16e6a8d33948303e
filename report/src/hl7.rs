//! HL7 v2.5.1 ORU^R01 (unsolicited observation result) for a report, and MLLP framing.
//!
//! Encoding characters `|^~\&`; text is escaped per HL7 v2 section 2.7 (`\F\ \S\ \T\ \R\ \E\`);
//! MSH-18 declares `UNICODE UTF-8` (the message is UTF-8 bytes). Each line of a section is
//! one OBX of type TX, sub-ID grouping the section. MLLP: `0x0B message 0x1C 0x0D`.

use std::io::{Read, Write};

use chrono::{DateTime, Utc};

use crate::model::{Report, ReportStatus};

/// Largest HL7 message accepted from a peer (an ACK is much smaller).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

const SB: u8 = 0x0B;
const EB: u8 = 0x1C;
const CR: u8 = 0x0D;

/// Errors of the HL7/MLLP layer.
#[derive(Debug, thiserror::Error)]
pub enum Hl7Error {
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("MLLP framing error: {0}")]
    Framing(&'static str),
    #[error("malformed HL7 message: {0}")]
    Malformed(&'static str),
    #[error("message is not UTF-8")]
    NotUtf8,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Report(#[from] crate::model::ReportError),
}

/// Addressing of the message (MSH-3..6) and its control id (MSH-10).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// MSH-10, echoed in the ACK's MSA-2.
    pub control_id: String,
    /// MSH-7.
    pub created: DateTime<Utc>,
    /// `P` production, `T` training, `D` debugging.
    pub processing_id: String,
}

/// Escapes a text for one HL7 field component (encoding characters `|^~\&`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\r' => out.push_str("\\X0D\\"),
            '\n' => out.push_str("\\X0A\\"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; unknown escapes are kept as written.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('\\') {
            Some(j) => {
                let seq = &after[..j];
                match seq {
                    "F" => out.push('|'),
                    "S" => out.push('^'),
                    "T" => out.push('&'),
                    "R" => out.push('~'),
                    "E" => out.push('\\'),
                    ".br" => out.push('\n'),
                    "X0D" => out.push('\r'),
                    "X0A" => out.push('\n'),
                    other => {
                        out.push('\\');
                        out.push_str(other);
                        out.push('\\');
                    }
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S+0000").to_string()
}

/// OBX-11 / OBR-25 result status.
fn result_status(s: ReportStatus) -> &'static str {
    match s {
        ReportStatus::Preliminary => "P",
        ReportStatus::Final => "F",
        ReportStatus::Amended => "C",
    }
}

/// Builds the ORU^R01 message (segments separated by `\r`), the report and the envelope
/// validated first. `pdf`, when given, goes into one more OBX of type ED (base64); the whole
/// message stays under [`MAX_MESSAGE_BYTES`].
pub fn oru_r01(report: &Report, env: &Envelope, pdf: Option<&[u8]>) -> Result<String, Hl7Error> {
    report.validate()?;
    for (field, v) in [
        ("sending_application", &env.sending_application),
        ("sending_facility", &env.sending_facility),
        ("receiving_application", &env.receiving_application),
        ("receiving_facility", &env.receiving_facility),
        ("control_id", &env.control_id),
        ("processing_id", &env.processing_id),
    ] {
        if v.chars().count() > 180 || v.chars().any(char::is_control) {
            return Err(crate::model::ReportError::invalid(
                format!("envelope.{field}"),
                "longer than 180 characters or a control character",
            )
            .into());
        }
    }
    if env.control_id.is_empty() {
        return Err(crate::model::ReportError::invalid("envelope.control_id", "empty").into());
    }
    if pdf.is_some_and(|p| p.len() / 3 * 4 > MAX_MESSAGE_BYTES - 64 * 1024) {
        return Err(Hl7Error::TooLarge(MAX_MESSAGE_BYTES));
    }
    let e = escape;
    let mut segs: Vec<String> = Vec::new();
    segs.push(format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ORU^R01^ORU_R01|{}|{}|2.5.1|||AL|NE|JPN|UNICODE UTF-8",
        e(&env.sending_application),
        e(&env.sending_facility),
        e(&env.receiving_application),
        e(&env.receiving_facility),
        ts(&env.created),
        e(&env.control_id),
        e(&env.processing_id),
    ));
    let s = &report.study;
    // PN components: DICOM `FAMILY^GIVEN` maps to XPN components 1 and 2
    let name: Vec<String> = s.patient_name.split('^').map(e).collect();
    segs.push(format!(
        "PID|1||{}||{}||{}|{}",
        e(&s.patient_id),
        name.join("^"),
        e(&s.patient_birth_date),
        e(&s.patient_sex),
    ));
    let author: Vec<String> = report.author.name.split('^').map(e).collect();
    // OBR-32 principal result interpreter (NDL): name in component 1 as CNN (id&family&given)
    let interpreter = format!("&{}", author.join("&"));
    segs.push(format!(
        "OBR|1|{acc}|{rid}|18748-4^Diagnostic imaging study^LN|||{obs}|||||||||||{acc}||||{signed}||{modality}|{status}|||||||{interp}",
        acc = e(&s.accession_number),
        rid = e(&format!("{}-v{}", report.report_id, report.version)),
        obs = e(&format!("{}{}", s.study_date, s.study_time.split('.').next().unwrap_or(""))),
        signed = ts(&report.signed_at),
        modality = e(&s.modality),
        status = result_status(report.status),
        interp = interpreter,
    ));
    let status = result_status(report.status);
    let mut n = 0usize;
    let mut obx = |segs: &mut Vec<String>, vt: &str, code: &str, sub: usize, value: &str| {
        n += 1;
        segs.push(format!("OBX|{n}|{vt}|{code}|{sub}|{value}||||||{status}"));
    };
    obx(
        &mut segs,
        "ST",
        "113014^Study Instance UID^DCM",
        0,
        &e(&s.study_instance_uid),
    );
    let sections = [
        ("59776-5^Procedure findings^LN", &report.sections.findings),
        ("19005-8^Impression^LN", &report.sections.impression),
        ("18783-1^Recommendation^LN", &report.sections.recommendation),
    ];
    for (i, (code, text)) in sections.iter().enumerate() {
        if text.is_empty() {
            continue;
        }
        for line in text.split('\n') {
            obx(&mut segs, "TX", code, i + 1, &e(line));
        }
    }
    if let Some(reason) = &report.amendment_reason {
        for line in reason.split('\n') {
            obx(&mut segs, "TX", "AMEND^Reason for amendment^L", 4, &e(line));
        }
    }
    if let Some(pdf) = pdf {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(pdf);
        obx(
            &mut segs,
            "ED",
            "18748-4^Diagnostic imaging study^LN",
            5,
            &format!("^application^pdf^Base64^{data}"),
        );
    }
    let mut out = segs.join("\r");
    out.push('\r');
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(Hl7Error::TooLarge(MAX_MESSAGE_BYTES));
    }
    Ok(out)
}

/// A parsed HL7 v2 message: segments of fields, values still escaped.
#[derive(Debug, Clone)]
pub struct Message {
    segments: Vec<Vec<String>>,
}

impl Message {
    /// Parses a message (segments separated by `\r`, `\n` tolerated). Only the standard
    /// encoding characters `|^~\&` are accepted.
    pub fn parse(text: &str) -> Result<Message, Hl7Error> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(Hl7Error::TooLarge(MAX_MESSAGE_BYTES));
        }
        if !text.starts_with("MSH|^~\\&") {
            return Err(Hl7Error::Malformed("does not start with MSH|^~\\&"));
        }
        let segments: Vec<Vec<String>> = text
            .split(['\r', '\n'])
            .filter(|s| !s.is_empty())
            .map(|s| {
                let mut f: Vec<String> = s.split('|').map(str::to_owned).collect();
                if f[0] == "MSH" {
                    // MSH-1 is the field separator itself: fields keep their standard numbers
                    f.insert(1, "|".to_owned());
                }
                f
            })
            .collect();
        if segments.iter().any(|s| s[0].len() != 3) {
            return Err(Hl7Error::Malformed("segment name is not 3 characters"));
        }
        Ok(Message { segments })
    }

    /// Every segment with this name.
    pub fn segments<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        self.segments
            .iter()
            .filter(move |s| s[0] == name)
            .map(|s| s.as_slice())
    }

    /// Field `n` (1-based, as numbered by the standard) of the first segment `name`, unescaped.
    pub fn field(&self, name: &str, n: usize) -> Option<String> {
        self.segments(name)
            .next()
            .and_then(|s| s.get(n))
            .map(|v| unescape(v))
    }

    /// Component `c` (1-based) of field `n` of the first segment `name`, unescaped.
    pub fn component(&self, name: &str, n: usize, c: usize) -> Option<String> {
        let s = self.segments(name).next()?;
        let f = s.get(n)?;
        f.split('^').nth(c.checked_sub(1)?).map(unescape)
    }
}

/// The acknowledgment code of MSA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// AA / CA: accepted.
    Accept,
    /// AE / CE: error, may be re-sent after a fix.
    Error,
    /// AR / CR: rejected.
    Reject,
}

/// A parsed ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub code: AckCode,
    /// MSA-2: the control id of the message acknowledged.
    pub control_id: String,
    /// MSA-3 (or ERR), if any.
    pub text: Option<String>,
}

/// Parses an ACK message (MSH + MSA).
pub fn parse_ack(text: &str) -> Result<Ack, Hl7Error> {
    let m = Message::parse(text)?;
    let code = match m.field("MSA", 1).as_deref() {
        Some("AA") | Some("CA") => AckCode::Accept,
        Some("AE") | Some("CE") => AckCode::Error,
        Some("AR") | Some("CR") => AckCode::Reject,
        Some(_) => return Err(Hl7Error::Malformed("unknown MSA-1 code")),
        None => return Err(Hl7Error::Malformed("no MSA segment")),
    };
    let control_id = m.field("MSA", 2).unwrap_or_default();
    let text = m.field("MSA", 3).filter(|t| !t.is_empty());
    Ok(Ack {
        code,
        control_id,
        text,
    })
}

/// Builds an ACK for a received message (the receiving side; used in tests and by peers).
pub fn ack_for(received: &Message, code: &str, text: &str, now: DateTime<Utc>) -> String {
    let f = |n| {
        received
            .segments("MSH")
            .next()
            .and_then(|s| s.get(n))
            .cloned()
            .unwrap_or_default()
    };
    format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^R01^ACK|ACK{}|P|2.5.1||||||UNICODE UTF-8\rMSA|{}|{}|{}\r",
        f(5),
        f(6),
        f(3),
        f(4),
        ts(&now),
        f(10),
        code,
        f(10),
        escape(text),
    )
}

/// Wraps a message in an MLLP frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(SB);
    out.extend_from_slice(message);
    out.extend_from_slice(&[EB, CR]);
    out
}

/// Reads one MLLP frame from `r` and returns its payload; at most `max` payload bytes.
/// Bytes before the start block are refused (no resynchronisation on garbage).
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, Hl7Error> {
    let mut byte = [0u8; 1];
    r.read_exact(&mut byte)?;
    if byte[0] != SB {
        return Err(Hl7Error::Framing("no start block"));
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Err(Hl7Error::Framing("connection closed inside a frame"));
        }
        // look for the end block only in the new bytes (and the one before them)
        let from = out.len().saturating_sub(1);
        out.extend_from_slice(&buf[..n]);
        if let Some(end) = out[from..]
            .windows(2)
            .position(|w| w == [EB, CR])
            .map(|i| i + from)
        {
            if end + 2 != out.len() {
                return Err(Hl7Error::Framing("bytes after the end of the frame"));
            }
            out.truncate(end);
            if out.contains(&SB) {
                return Err(Hl7Error::Framing("start block inside a frame"));
            }
            return Ok(out);
        }
        if out.len() > max + 2 {
            return Err(Hl7Error::TooLarge(max));
        }
    }
}

/// Sends one message over an established connection and reads the ACK (MLLP, one frame
/// each way). Timeouts are the caller's (set them on the socket).
pub fn exchange<S: Read + Write>(stream: &mut S, message: &str) -> Result<Ack, Hl7Error> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(Hl7Error::TooLarge(MAX_MESSAGE_BYTES));
    }
    stream.write_all(&frame(message.as_bytes()))?;
    stream.flush()?;
    let reply = read_frame(stream, 64 * 1024)?;
    let text = String::from_utf8(reply).map_err(|_| Hl7Error::NotUtf8)?;
    parse_ack(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_every_delimiter() {
        let s = r"a|b^c~d\e&f 日本語";
        let esc = escape(s);
        assert_eq!(esc, r"a\F\b\S\c\R\d\E\e\T\f 日本語");
        assert!(
            !esc.contains('|') && !esc.contains('^') && !esc.contains('~') && !esc.contains('&')
        );
        assert_eq!(unescape(&esc), s);
        assert_eq!(unescape(r"x\.br\y\Zfoo\"), "x\ny\\Zfoo\\");
    }

    #[test]
    fn frame_and_read_frame() {
        let f = frame(b"MSH|x\r");
        assert_eq!(f[0], 0x0B);
        assert_eq!(&f[f.len() - 2..], &[0x1C, 0x0D]);
        let got = read_frame(&mut f.as_slice(), 100).expect("frame");
        assert_eq!(got, b"MSH|x\r");
        // too large
        let big = frame(&vec![b'a'; 10_000]);
        assert!(matches!(
            read_frame(&mut big.as_slice(), 100),
            Err(Hl7Error::TooLarge(_))
        ));
        // no start block, truncated
        assert!(read_frame(&mut &b"MSH"[..], 100).is_err());
        assert!(read_frame(&mut &[0x0B, b'a'][..], 100).is_err());
    }

    #[test]
    fn ack_codes() {
        let ack = |c: &str| {
            format!("MSH|^~\\&|A|B|C|D|20260101000000||ACK|1|P|2.5.1\rMSA|{c}|CTL42|why\\F\\not\r")
        };
        let a = parse_ack(&ack("AA")).expect("AA");
        assert_eq!(a.code, AckCode::Accept);
        assert_eq!(a.control_id, "CTL42");
        assert_eq!(a.text.as_deref(), Some("why|not"));
        assert_eq!(parse_ack(&ack("AE")).expect("AE").code, AckCode::Error);
        assert_eq!(parse_ack(&ack("AR")).expect("AR").code, AckCode::Reject);
        assert!(parse_ack(&ack("ZZ")).is_err());
        assert!(parse_ack("MSH|^~\\&|A\r").is_err());
        assert!(parse_ack("garbage").is_err());
    }
}
