//! PS3.15 Table E.1-1 as data: the vendored JSON (`core/data/annex-e/`) and the
//! allow-list of safe attributes (`core/data/safe-attributes.txt`), parsed once.
//!
//! Nothing here names a tag of the profile: every rule comes from those files.

use std::sync::OnceLock;

use serde::Deserialize;

use super::DeidError;

/// The vendored table, DICOM edition 2024b (see `core/data/annex-e/README.md`).
pub const TABLE_JSON: &str =
    include_str!("../../data/annex-e/confidentiality_profile_attributes.json");
/// Attributes kept unchanged although Table E.1-1 does not mention them.
pub const SAFE_ATTRIBUTES: &str = include_str!("../../data/safe-attributes.txt");

/// One action code of the table, compound codes included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    D,
    Z,
    X,
    K,
    C,
    U,
    ZD,
    XZ,
    XD,
    XZD,
    /// `X/Z/U*`: sequences of references.
    XZU,
}

impl Action {
    pub fn parse(code: &str) -> Option<Action> {
        Some(match code {
            "D" => Action::D,
            "Z" => Action::Z,
            "X" => Action::X,
            "K" => Action::K,
            "C" => Action::C,
            "U" => Action::U,
            "Z/D" => Action::ZD,
            "X/Z" => Action::XZ,
            "X/D" => Action::XD,
            "X/Z/D" => Action::XZD,
            "X/Z/U*" => Action::XZU,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Action::D => "D",
            Action::Z => "Z",
            Action::X => "X",
            Action::K => "K",
            Action::C => "C",
            Action::U => "U",
            Action::ZD => "Z/D",
            Action::XZ => "X/Z",
            Action::XD => "X/D",
            Action::XZD => "X/Z/D",
            Action::XZU => "X/Z/U*",
        }
    }
}

/// The profile options that have a column in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionColumn {
    RetainSafePrivate,
    RetainUids,
    RetainDeviceIdentity,
    RetainInstitutionIdentity,
    RetainPatientCharacteristics,
    RetainLongFullDates,
    RetainLongModifiedDates,
    CleanDescriptors,
    CleanStructuredContent,
    CleanGraphics,
}

impl OptionColumn {
    pub const ALL: [OptionColumn; 10] = [
        OptionColumn::RetainSafePrivate,
        OptionColumn::RetainUids,
        OptionColumn::RetainDeviceIdentity,
        OptionColumn::RetainInstitutionIdentity,
        OptionColumn::RetainPatientCharacteristics,
        OptionColumn::RetainLongFullDates,
        OptionColumn::RetainLongModifiedDates,
        OptionColumn::CleanDescriptors,
        OptionColumn::CleanStructuredContent,
        OptionColumn::CleanGraphics,
    ];

    /// The JSON key of the column.
    pub fn key(self) -> &'static str {
        match self {
            OptionColumn::RetainSafePrivate => "rtnSafePrivOpt",
            OptionColumn::RetainUids => "rtnUIDsOpt",
            OptionColumn::RetainDeviceIdentity => "rtnDevIdOpt",
            OptionColumn::RetainInstitutionIdentity => "rtnInstIdOpt",
            OptionColumn::RetainPatientCharacteristics => "rtnPatCharsOpt",
            OptionColumn::RetainLongFullDates => "rtnLongFullDatesOpt",
            OptionColumn::RetainLongModifiedDates => "rtnLongModifDatesOpt",
            OptionColumn::CleanDescriptors => "cleanDescOpt",
            OptionColumn::CleanStructuredContent => "cleanStructContOpt",
            OptionColumn::CleanGraphics => "cleanGraphOpt",
        }
    }
}

/// Which tags a row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagPattern {
    /// One concrete tag, `(group << 16) | element`.
    Exact(u32),
    /// A repeating group (`50xx`, `60xx`): even groups `base..=base+0x1E`;
    /// `element: None` stands for every element of the group.
    Repeating { base: u16, element: Option<u16> },
    /// Every element of an odd group.
    Private,
}

impl TagPattern {
    /// Parse `"(GGGG,EEEE)"`, `"(50XX,XXXX)"`, `"(60XX,3000)"` or the private-group row.
    pub fn parse(s: &str) -> Option<TagPattern> {
        if s.starts_with("(GGGG,EEEE)") && s.to_ascii_uppercase().contains("ODD") {
            return Some(TagPattern::Private);
        }
        let inner = s.strip_prefix('(')?.strip_suffix(')')?;
        let (g, e) = inner.split_once(',')?;
        if g.len() != 4 || e.len() != 4 {
            return None;
        }
        let element = if e == "XXXX" {
            None
        } else {
            Some(u16::from_str_radix(e, 16).ok()?)
        };
        if let Some(hi) = g.strip_suffix("XX") {
            let base = u16::from_str_radix(hi, 16).ok()? << 8;
            return Some(TagPattern::Repeating { base, element });
        }
        let group = u16::from_str_radix(g, 16).ok()?;
        let element = element?;
        Some(TagPattern::Exact(
            (u32::from(group) << 16) | u32::from(element),
        ))
    }
}

/// One row of Table E.1-1, as parsed from the JSON.
#[derive(Debug, Clone)]
pub struct Row {
    pub index: usize,
    pub name: String,
    pub tag_text: String,
    pub pattern: TagPattern,
    pub std_comp_iod: bool,
    pub basic: Action,
    /// Actions of the option columns that have a value on this row.
    pub options: Vec<(OptionColumn, Action)>,
}

impl Row {
    pub fn option(&self, col: OptionColumn) -> Option<Action> {
        self.options
            .iter()
            .find(|(c, _)| *c == col)
            .map(|(_, a)| *a)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    name: String,
    tag: String,
    id: String,
    #[serde(rename = "stdCompIOD")]
    std_comp_iod: String,
    #[serde(rename = "basicProfile")]
    basic_profile: String,
    #[serde(rename = "rtnSafePrivOpt")]
    rtn_safe_priv: Option<String>,
    #[serde(rename = "rtnUIDsOpt")]
    rtn_uids: Option<String>,
    #[serde(rename = "rtnDevIdOpt")]
    rtn_dev_id: Option<String>,
    #[serde(rename = "rtnInstIdOpt")]
    rtn_inst_id: Option<String>,
    #[serde(rename = "rtnPatCharsOpt")]
    rtn_pat_chars: Option<String>,
    #[serde(rename = "rtnLongFullDatesOpt")]
    rtn_long_full_dates: Option<String>,
    #[serde(rename = "rtnLongModifDatesOpt")]
    rtn_long_modif_dates: Option<String>,
    #[serde(rename = "cleanDescOpt")]
    clean_desc: Option<String>,
    #[serde(rename = "cleanStructContOpt")]
    clean_struct_cont: Option<String>,
    #[serde(rename = "cleanGraphOpt")]
    clean_graph: Option<String>,
}

fn parse_rows(json: &str) -> Result<Vec<Row>, String> {
    let raw: Vec<RawRow> =
        serde_json::from_str(json).map_err(|e| format!("Table E.1-1 JSON does not parse: {e}"))?;
    let mut rows = Vec::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        let bad = |what: &str| format!("Table E.1-1 row {index} ({}): {what}", r.tag);
        let pattern = TagPattern::parse(&r.tag).ok_or_else(|| bad("unreadable tag"))?;
        if let TagPattern::Exact(t) = pattern {
            if format!("{t:08x}") != r.id {
                return Err(bad("tag and id disagree"));
            }
        }
        let basic = Action::parse(&r.basic_profile).ok_or_else(|| bad("unknown basic action"))?;
        let std_comp_iod = match r.std_comp_iod.as_str() {
            "Y" => true,
            "N" => false,
            _ => return Err(bad("stdCompIOD is neither Y nor N")),
        };
        let cells = [
            (OptionColumn::RetainSafePrivate, &r.rtn_safe_priv),
            (OptionColumn::RetainUids, &r.rtn_uids),
            (OptionColumn::RetainDeviceIdentity, &r.rtn_dev_id),
            (OptionColumn::RetainInstitutionIdentity, &r.rtn_inst_id),
            (OptionColumn::RetainPatientCharacteristics, &r.rtn_pat_chars),
            (OptionColumn::RetainLongFullDates, &r.rtn_long_full_dates),
            (
                OptionColumn::RetainLongModifiedDates,
                &r.rtn_long_modif_dates,
            ),
            (OptionColumn::CleanDescriptors, &r.clean_desc),
            (OptionColumn::CleanStructuredContent, &r.clean_struct_cont),
            (OptionColumn::CleanGraphics, &r.clean_graph),
        ];
        let mut options = Vec::new();
        for (col, cell) in cells {
            if let Some(code) = cell {
                let a = Action::parse(code).ok_or_else(|| bad("unknown option action"))?;
                // Option cells only ever keep (K) or clean (C); anything else would be a
                // table we do not understand: refuse to start rather than guess.
                if !matches!(a, Action::K | Action::C) {
                    return Err(bad("option action other than K or C"));
                }
                options.push((col, a));
            }
        }
        rows.push(Row {
            index,
            name: r.name,
            tag_text: r.tag,
            pattern,
            std_comp_iod,
            basic,
            options,
        });
    }
    Ok(rows)
}

/// The rows of Table E.1-1, parsed once. An unreadable table is an error (the engine then
/// cannot be built: fail closed).
pub fn rows() -> Result<&'static [Row], DeidError> {
    static ROWS: OnceLock<Result<Vec<Row>, String>> = OnceLock::new();
    match ROWS.get_or_init(|| parse_rows(TABLE_JSON)) {
        Ok(v) => Ok(v.as_slice()),
        Err(e) => Err(DeidError::Table(e.clone())),
    }
}

/// One line of `safe-attributes.txt`.
#[derive(Debug, Clone)]
pub struct SafeAttribute {
    pub tag: u32,
    pub keyword: String,
}

fn parse_safe(text: &str) -> Result<Vec<SafeAttribute>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "safe-attributes.txt line {}: expected \"(GGGG,EEEE) Keyword\"",
                n + 1
            )
        };
        let (tag, keyword) = line.split_once(' ').ok_or_else(bad)?;
        let tag = match TagPattern::parse(tag) {
            Some(TagPattern::Exact(t)) => t,
            _ => return Err(bad()),
        };
        let keyword = keyword.trim();
        if keyword.is_empty() || !keyword.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        if (tag >> 16) % 2 == 1 {
            return Err(format!("safe-attributes.txt line {}: private tag", n + 1));
        }
        out.push(SafeAttribute {
            tag,
            keyword: keyword.to_owned(),
        });
    }
    Ok(out)
}

/// The safe allow-list, parsed once.
pub fn safe_attributes() -> Result<&'static [SafeAttribute], DeidError> {
    static SAFE: OnceLock<Result<Vec<SafeAttribute>, String>> = OnceLock::new();
    match SAFE.get_or_init(|| parse_safe(SAFE_ATTRIBUTES)) {
        Ok(v) => Ok(v.as_slice()),
        Err(e) => Err(DeidError::Table(e.clone())),
    }
}
