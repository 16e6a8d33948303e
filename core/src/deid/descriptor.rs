//! Cleaning of free-text descriptors (action C on LO, SH, ST, LT, UT, UC): a value is kept
//! only if every word is in a vocabulary of technical and anatomical terms
//! (`core/data/descriptor-vocabulary.txt`) and its numbers cannot be a date or an
//! identifier; anything else is replaced by a fixed placeholder.

use std::collections::HashSet;
use std::sync::OnceLock;

/// The vocabulary, as data.
pub const VOCABULARY: &str = include_str!("../../data/descriptor-vocabulary.txt");

fn vocabulary() -> &'static HashSet<String> {
    static V: OnceLock<HashSet<String>> = OnceLock::new();
    V.get_or_init(|| {
        VOCABULARY
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .map(str::to_ascii_uppercase)
            .collect()
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Letters,
    Digits,
}

/// Whether `text` may be kept as a cleaned descriptor.
pub fn is_clean(text: &str) -> bool {
    let t = text.trim_matches([' ', '\0']);
    if t.len() > 64 || !t.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    let b = t.as_bytes();
    // tokens: maximal runs of letters or of digits, with their byte ranges
    let mut tokens: Vec<(Kind, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let kind = if b[i].is_ascii_alphabetic() {
            Kind::Letters
        } else if b[i].is_ascii_digit() {
            Kind::Digits
        } else {
            i += 1;
            continue;
        };
        let start = i;
        while i < b.len()
            && match kind {
                Kind::Letters => b[i].is_ascii_alphabetic(),
                Kind::Digits => b[i].is_ascii_digit(),
            }
        {
            i += 1;
        }
        tokens.push((kind, start, i));
    }
    let vocab = vocabulary();
    for (n, &(kind, s, e)) in tokens.iter().enumerate() {
        match kind {
            Kind::Letters => {
                if !vocab.contains(&t[s..e].to_ascii_uppercase()) {
                    return false;
                }
            }
            Kind::Digits => {
                if e - s > 3 {
                    return false;
                }
                // date-like chains: 12/03, 12-03, 12.03.24 ...
                let mut chain = 1;
                let mut dated = false;
                let mut prev_end = e;
                for &(k2, s2, e2) in &tokens[n + 1..] {
                    if k2 != Kind::Digits || s2 != prev_end + 1 {
                        break;
                    }
                    let sep = b[prev_end];
                    if !matches!(sep, b'/' | b'-' | b'.') {
                        break;
                    }
                    dated |= sep != b'.';
                    chain += 1;
                    prev_end = e2;
                }
                if dated || chain >= 3 {
                    return false;
                }
            }
        }
    }
    true
}
