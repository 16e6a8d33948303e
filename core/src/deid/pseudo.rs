//! Keyed pseudonyms: UIDs, patient tokens and date offsets, all from HMAC-SHA256 with the
//! site secret, so the same original always gives the same replacement (across instances,
//! series, processes and restarts) and nobody without the secret can link them back.
//!
//! Every generated UID and patient token carries a keyed check value, so the engine can
//! recognise its own output and leave it alone (idempotence) without trusting any marker
//! that a sender could forge.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The keyed functions. Cheap to share between threads (`&Keyed`).
#[derive(Clone)]
pub struct Keyed {
    mac: HmacSha256,
}

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyed(<secret>)")
    }
}

impl Keyed {
    pub fn new(secret: &[u8]) -> Result<Keyed, String> {
        if secret.len() < 16 {
            return Err("the de-identification secret must be at least 16 bytes".into());
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(Keyed { mac })
    }

    fn digest(&self, domain: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(domain);
        m.update(data);
        m.finalize().into_bytes().into()
    }

    fn uid_number(&self, original: &str) -> u128 {
        let h = self.digest(b"uid:", original.as_bytes());
        let c = self.digest(b"uid-check:", &h[..12]);
        let mut b = [0u8; 16];
        b[..12].copy_from_slice(&h[..12]);
        b[12..].copy_from_slice(&c[..4]);
        u128::from_be_bytes(b)
    }

    /// `root + "." + decimal(u128)`: 96 bits of HMAC(secret, "uid:" + original) followed by
    /// a 32-bit keyed check of those bits. At most 24 + 1 + 39 = 64 characters.
    pub fn uid(&self, root: &str, original: &str) -> String {
        let n = self.uid_number(original);
        let mut s = String::with_capacity(root.len() + 40);
        s.push_str(root);
        s.push('.');
        s.push_str(&n.to_string());
        s
    }

    /// Whether `uid` is a UID this key generated under `root`.
    pub fn is_own_uid(&self, root: &str, uid: &str) -> bool {
        let Some(rest) = uid.strip_prefix(root).and_then(|r| r.strip_prefix('.')) else {
            return false;
        };
        if rest.is_empty() || rest.len() > 39 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if rest.len() > 1 && rest.starts_with('0') {
            return false;
        }
        let Ok(n) = rest.parse::<u128>() else {
            return false;
        };
        let b = n.to_be_bytes();
        let c = self.digest(b"uid-check:", &b[..12]);
        c[..4] == b[12..]
    }

    /// Patient token: `n` lower-case hex digits, the first `n - 4` keyed on the original
    /// Patient ID, the last 4 a keyed check of the first ones.
    pub fn patient_token(&self, n: usize, original_patient_id: &str) -> String {
        let h = hex::encode(self.digest(b"pid:", original_patient_id.as_bytes()));
        let body = &h[..n - 4];
        let c = hex::encode(self.digest(b"pid-check:", body.as_bytes()));
        let mut s = String::with_capacity(n);
        s.push_str(body);
        s.push_str(&c[..4]);
        s
    }

    /// Whether `token` is a patient token this key generated.
    pub fn is_own_token(&self, token: &str) -> bool {
        let n = token.len();
        if !(12..=32).contains(&n)
            || !token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return false;
        }
        let (body, check) = token.split_at(n - 4);
        let c = hex::encode(self.digest(b"pid-check:", body.as_bytes()));
        c[..4] == *check
    }

    /// Date offset in days for a patient: -1 ..= -max_days.
    pub fn date_shift_days(&self, original_patient_id: &str, max_days: u32) -> i64 {
        let h = self.digest(b"shift:", original_patient_id.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[..8]);
        let x = u64::from_be_bytes(b);
        -(1 + (x % u64::from(max_days.max(1))) as i64)
    }
}

/// `prefix{hashN}suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudonymFormat {
    prefix: String,
    digits: usize,
    suffix: String,
}

impl PseudonymFormat {
    /// Parse a format; `allow_pn` admits the PN delimiters `^` and `=`.
    pub fn parse(fmt: &str, allow_pn: bool) -> Result<PseudonymFormat, String> {
        let start = fmt
            .find("{hash")
            .ok_or_else(|| "expected one {hashN} placeholder, e.g. \"ANON-{hash16}\"".to_owned())?;
        let rest = &fmt[start + 5..];
        let end = rest
            .find('}')
            .ok_or_else(|| "unterminated {hashN} placeholder".to_owned())?;
        let digits: usize = rest[..end]
            .parse()
            .map_err(|_| "{hashN}: N must be a number".to_owned())?;
        if !(12..=32).contains(&digits) {
            return Err("{hashN}: N must be 12..=32 (the last 4 digits are a keyed check)".into());
        }
        let prefix = fmt[..start].to_owned();
        let suffix = rest[end + 1..].to_owned();
        for part in [&prefix, &suffix] {
            if part.contains('{') || part.contains('}') {
                return Err("only one {hashN} placeholder is allowed".into());
            }
            let ok = part.bytes().all(|b| {
                (0x20..0x7f).contains(&b) && b != b'\\' && (allow_pn || (b != b'^' && b != b'='))
            });
            if !ok {
                return Err("literal text must be printable ASCII without '\\'".into());
            }
        }
        if prefix.len() + digits + suffix.len() > 64 {
            return Err("the pseudonym would be longer than 64 characters".into());
        }
        Ok(PseudonymFormat {
            prefix,
            digits,
            suffix,
        })
    }

    pub fn digits(&self) -> usize {
        self.digits
    }

    pub fn render(&self, token: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + token.len() + self.suffix.len());
        s.push_str(&self.prefix);
        s.push_str(token);
        s.push_str(&self.suffix);
        s
    }

    /// The token inside `value` if `value` has this format (the token is not verified).
    pub fn extract<'a>(&self, value: &'a str) -> Option<&'a str> {
        let t = value
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        (t.len() == self.digits).then_some(t)
    }
}
