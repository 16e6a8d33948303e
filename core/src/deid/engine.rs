//! The compiled rules and the walk over a data set.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{NaiveDate, TimeDelta};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::smallvec::SmallVec;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use dicom_encoding::transfer_syntax::{Endianness, TransferSyntaxIndex};
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::charset::{self, CharacterSet};
use super::config::{DeidConfig, BASIC_PROFILE_CODE};
use super::descriptor;
use super::pseudo::{Keyed, PseudonymFormat};
use super::screen::{self, Screening, ScreeningPolicy};
use super::table::{self, Action, OptionColumn, Row, TagPattern};
use super::{DeidError, Identifiers, Outcome, Report, Stats};

/// Sequences nested deeper than this are refused (a hostile file could exhaust the stack).
/// Every walk of the engine over nested items is bounded by it.
pub const MAX_DEPTH: usize = 32;
/// Dummy value (D) of text attributes and placeholder of cleaned (C) text.
const DUMMY_TEXT: &str = "ANONYMIZED";
const CLEANED_TEXT: &str = "CLEANED";
/// Prefix of the UIDs defined by the DICOM standard (SOP classes, transfer syntaxes, coding
/// schemes...): never remapped.
const DICOM_UID_ROOT: &str = "1.2.840.10008.";

/// What the engine does to one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Remove,
    Empty,
    Dummy,
    Keep,
    Clean,
    Uid,
    /// `X/Z/U*`: keep the sequence, process its items (their UIDs are `U` rows).
    KeepRefs,
    /// Patient ID: keyed pseudonym.
    PatientId,
    /// Patient's Name: keyed pseudonym (same token as the Patient ID).
    PatientName,
}

/// The action of `row` once the active options are taken into account: a cell of an
/// active option overrides the basic profile; when active options disagree (K vs C),
/// cleaning wins.
pub(crate) fn effective_action(row: &Row, cfg: &DeidConfig) -> Action {
    let active = |c: OptionColumn| match c {
        OptionColumn::RetainSafePrivate => cfg.retain_safe_private,
        OptionColumn::RetainUids => cfg.retain_uids,
        OptionColumn::RetainDeviceIdentity => cfg.retain_device_identity,
        OptionColumn::RetainInstitutionIdentity => cfg.retain_institution_identity,
        OptionColumn::RetainPatientCharacteristics => cfg.retain_patient_characteristics,
        OptionColumn::RetainLongFullDates => cfg.retain_long_full_dates,
        OptionColumn::RetainLongModifiedDates => cfg.retain_long_modified_dates,
        OptionColumn::CleanDescriptors => cfg.clean_descriptors,
        OptionColumn::CleanStructuredContent => cfg.clean_structured_content,
        OptionColumn::CleanGraphics => cfg.clean_graphics,
    };
    let mut keep = false;
    let mut clean = false;
    for (col, a) in &row.options {
        if active(*col) {
            match a {
                Action::C => clean = true,
                _ => keep = true,
            }
        }
    }
    if clean {
        Action::C
    } else if keep {
        Action::K
    } else {
        row.basic
    }
}

/// Compound actions resolved without IOD type knowledge (see the module docs).
pub(crate) fn resolve(a: Action) -> Op {
    match a {
        Action::D | Action::ZD => Op::Dummy,
        Action::Z => Op::Empty,
        Action::X | Action::XZ | Action::XD | Action::XZD => Op::Remove,
        Action::K => Op::Keep,
        Action::C => Op::Clean,
        Action::U => Op::Uid,
        Action::XZU => Op::KeepRefs,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Rules {
    exact: HashMap<u32, Op>,
    curve: Op,
    overlay_data: Op,
    overlay_comments: Op,
    private: Op,
}

impl Rules {
    pub(crate) fn compile(cfg: &DeidConfig) -> Result<Rules, DeidError> {
        let rows = table::rows()?;
        let safe = table::safe_attributes()?;
        let mut exact = HashMap::with_capacity(rows.len() + safe.len());
        for s in safe {
            exact.insert(s.tag, Op::Keep);
        }
        let (mut curve, mut overlay_data, mut overlay_comments, mut private) =
            (None, None, None, None);
        for row in rows {
            let op = resolve(effective_action(row, cfg));
            match row.pattern {
                TagPattern::Exact(t) => {
                    exact.insert(t, op);
                }
                TagPattern::Repeating {
                    base: 0x5000,
                    element: None,
                } => curve = Some(op),
                TagPattern::Repeating {
                    base: 0x6000,
                    element: Some(0x3000),
                } => overlay_data = Some(op),
                TagPattern::Repeating {
                    base: 0x6000,
                    element: Some(0x4000),
                } => overlay_comments = Some(op),
                TagPattern::Private => private = Some(op),
                TagPattern::Repeating { .. } => {
                    return Err(DeidError::Table(format!(
                        "row {}: unknown repeating-group pattern {}",
                        row.index, row.tag_text
                    )))
                }
            }
        }
        // Pseudonymised attributes: the table says Z (name) and Z/D (ID); a keyed dummy
        // satisfies both and keeps instances of one patient together.
        for (tag, op) in [
            (tags::PATIENT_ID, Op::PatientId),
            (tags::PATIENT_NAME, Op::PatientName),
        ] {
            let key = tag_key(tag);
            if exact.get(&key).is_some_and(|o| *o != Op::Keep) {
                exact.insert(key, op);
            }
        }
        // A pattern row missing from the table means we do not know the table: refuse.
        let need = |o: Option<Op>, what: &str| {
            o.ok_or_else(|| DeidError::Table(format!("no row for {what}")))
        };
        Ok(Rules {
            exact,
            curve: need(curve, "curve data (50xx,xxxx)")?,
            overlay_data: need(overlay_data, "overlay data (60xx,3000)")?,
            overlay_comments: need(overlay_comments, "overlay comments (60xx,4000)")?,
            private: need(private, "private attributes")?,
        })
    }

    pub(crate) fn lookup(&self, tag: Tag) -> Op {
        if let Some(op) = self.exact.get(&tag_key(tag)) {
            return *op;
        }
        let g = tag.group();
        if g % 2 == 1 {
            return self.private;
        }
        let repeating = (g & 0xFF) <= 0x1E;
        if repeating && g & 0xFF00 == 0x5000 {
            return self.curve;
        }
        if repeating && g & 0xFF00 == 0x6000 {
            match tag.element() {
                0x3000 => return self.overlay_data,
                0x4000 => return self.overlay_comments,
                _ => {}
            }
        }
        Op::Remove
    }
}

fn tag_key(t: Tag) -> u32 {
    (u32::from(t.group()) << 16) | u32::from(t.element())
}

/// Per-object state of one de-identification.
struct Ctx {
    /// Key of the patient pseudonyms: the original Patient ID (or the pseudonym on a second pass).
    patient_key: String,
    /// Date offset in days (Modified Dates option, first pass only).
    shift: Option<i64>,
    /// The transfer syntax is little endian (pixel words can be stored as bytes).
    little_endian: bool,
    stats: Stats,
    /// Specific Character Set of the data set being walked (an item inherits its parent's
    /// unless it has its own).
    charset: CharacterSet,
    /// dicom-rs's text codec when it read, and when it will write, the current element
    /// (see [`RsCodecs`]).
    rs: RsCodecs,
}

/// The de-identification engine: compiled rules, options and key. Build once, share
/// (`&Engine` is `Send + Sync`) and call [`Engine::deidentify`] per instance.
pub struct Engine {
    cfg: DeidConfig,
    rules: Rules,
    keyed: Keyed,
    id_fmt: PseudonymFormat,
    name_fmt: PseudonymFormat,
    codes: Vec<(&'static str, &'static str)>,
    screening: ScreeningPolicy,
    private_keep: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .field("key", &self.keyed)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Validate `cfg`, read the profile data and compile the rules. `secret` (at least 16
    /// bytes) keys every pseudonym: keep it stable and secret.
    pub fn new(cfg: &DeidConfig, secret: &[u8]) -> Result<Engine, DeidError> {
        cfg.validate()?;
        let keyed = Keyed::new(secret).map_err(DeidError::Config)?;
        let rules = Rules::compile(cfg)?;
        let id_fmt =
            PseudonymFormat::parse(&cfg.patient_id_format, false).map_err(DeidError::Config)?;
        let name_fmt =
            PseudonymFormat::parse(&cfg.patient_name_format, true).map_err(DeidError::Config)?;
        let mut codes = vec![BASIC_PROFILE_CODE];
        codes.extend(cfg.active_options().iter().map(|o| (o.code, o.meaning)));
        let mut screening = cfg.screening.clone();
        screening.clean_pixel_data = cfg.clean_pixel_data;
        let private_keep =
            cfg.retain_safe_private && !cfg.safe_private.is_empty() && rules.private == Op::Clean;
        Ok(Engine {
            cfg: cfg.clone(),
            rules,
            keyed,
            id_fmt,
            name_fmt,
            codes,
            screening,
            private_keep,
        })
    }

    pub fn config(&self) -> &DeidConfig {
        &self.cfg
    }

    /// The screening policy in force (with the engine's Clean Pixel Data flag).
    pub fn screening_policy(&self) -> &ScreeningPolicy {
        &self.screening
    }

    /// Burned-in PHI screening with this engine's policy.
    pub fn screen(&self, obj: &DefaultDicomObject) -> Screening {
        screen::screen(obj, &self.screening)
    }

    /// Screen, clean pixels if a rule says so, then de-identify. An error means: quarantine.
    pub fn process(&self, obj: &mut DefaultDicomObject) -> Result<Outcome, DeidError> {
        match self.screen(obj) {
            Screening::Quarantine(reason) => return Ok(Outcome::Quarantine(reason)),
            Screening::CleanPixels(rects) => screen::blank_rectangles(obj, &rects)?,
            Screening::Pass => {}
        }
        self.deidentify(obj)
            .map(|r| Outcome::Deidentified(Box::new(r)))
    }

    /// De-identify `obj` in place (data set, file meta; the preamble is always written as
    /// zeros by dicom-object). On error the object is left partly processed and must be
    /// discarded (quarantine the original).
    pub fn deidentify(&self, obj: &mut DefaultDicomObject) -> Result<Report, DeidError> {
        let [patient_id, patient_name, accession_number, study_date, study_instance_uid] =
            top_texts(obj, IDENTIFIERS)?;
        let original = Identifiers {
            patient_id,
            patient_name,
            accession_number,
            study_date,
            study_instance_uid,
        };
        let pid = original.patient_id.clone().unwrap_or_default();
        let already = self.is_own_value(&self.id_fmt, &pid);
        let shift = (self.cfg.retain_long_modified_dates && !already).then(|| {
            self.keyed
                .date_shift_days(&pid, self.cfg.date_shift_max_days)
        });
        let ts = obj.meta().transfer_syntax();
        let little_endian = TransferSyntaxRegistry
            .get(ts)
            .is_some_and(|t| t.endianness() == Endianness::Little);
        let mut ctx = Ctx {
            patient_key: pid,
            shift,
            little_endian,
            stats: Stats::default(),
            charset: CharacterSet::default(),
            rs: RsCodecs::default(),
        };

        let inner = std::mem::replace(&mut **obj, InMemDicomObject::new_empty());
        **obj = self.process_dataset(inner, &mut ctx, 0)?;
        // Patient ID and Patient's Name are Type 2: make sure both carry a pseudonym, so
        // that a second pass recognises its own output even when the input had none.
        for (tag, op, fmt, vr) in [
            (tags::PATIENT_ID, Op::PatientId, &self.id_fmt, VR::LO),
            (tags::PATIENT_NAME, Op::PatientName, &self.name_fmt, VR::PN),
        ] {
            if obj.get(tag).is_none() && self.rules.lookup(tag) == op {
                let v = self.pseudonym(fmt, "", &ctx.patient_key);
                obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
            }
        }
        self.mark(obj);
        self.fix_meta(obj, &mut ctx);

        let [patient_id, patient_name, accession_number, study_date, study_instance_uid, series_uid, sop_instance_uid, sop_class_uid] =
            top_texts(obj, OUTPUT_IDENTIFIERS)?.map(|v| v.filter(|s| !s.is_empty()));
        Ok(Report {
            pseudonym: Identifiers {
                patient_id,
                patient_name,
                accession_number,
                study_date,
                study_instance_uid,
            },
            original,
            series_uid,
            sop_instance_uid,
            sop_class_uid,
            already_pseudonymized: already,
            stats: ctx.stats,
        })
    }

    /// The keyed replacement of a UID, as used everywhere in the output (useful to find
    /// the new UID of a study in the vault, for instance).
    pub fn remap_uid(&self, uid: &str) -> String {
        let t = uid.trim_matches([' ', '\0']);
        if t.is_empty()
            || t.starts_with(DICOM_UID_ROOT)
            || self.keyed.is_own_uid(&self.cfg.uid_root, t)
        {
            return t.to_owned();
        }
        self.keyed.uid(&self.cfg.uid_root, t)
    }

    fn is_own_value(&self, fmt: &PseudonymFormat, v: &str) -> bool {
        fmt.extract(v).is_some_and(|t| self.keyed.is_own_token(t))
    }

    fn pseudonym(&self, fmt: &PseudonymFormat, current: &str, key: &str) -> String {
        if self.is_own_value(fmt, current) {
            return current.to_owned();
        }
        // Key the token on the Patient ID pseudonym's own token when the ID is ours
        // (second pass), else on the original ID.
        let key = self
            .id_fmt
            .extract(key)
            .filter(|t| self.keyed.is_own_token(t))
            .unwrap_or(key);
        fmt.render(&self.keyed.patient_token(fmt.digits(), key))
    }

    fn process_dataset(
        &self,
        ds: InMemDicomObject,
        ctx: &mut Ctx,
        depth: usize,
    ) -> Result<InMemDicomObject, DeidError> {
        if depth > MAX_DEPTH {
            return Err(DeidError::TooDeep(MAX_DEPTH));
        }
        let mut out: Vec<InMemElement> = Vec::with_capacity(64);
        // private creators seen: (group, block, creator, index in `out`)
        let mut creators: SmallVec<[(u16, u8, String, usize); 4]> = SmallVec::new();
        let mut used_blocks: SmallVec<[(u16, u8); 4]> = SmallVec::new();
        let parent_charset = ctx.charset.clone();
        for elem in ds {
            let tag = elem.tag();
            if tag == tags::SPECIFIC_CHARACTER_SET {
                // needed to read every kept text value: always kept
                ctx.charset = parse_charset(&elem)?;
                ctx.rs.read(&elem);
                ctx.rs.write(&elem);
                ctx.stats.kept += 1;
                out.push(elem);
                continue;
            }
            if tag.group() % 2 == 1 {
                if !self.private_keep {
                    ctx.rs.skip(&elem)?;
                    ctx.stats.removed += 1;
                    continue;
                }
                let (g, e) = (tag.group(), tag.element());
                if (0x0010..=0x00FF).contains(&e) {
                    let creator = private_text(elem.value());
                    creators.push((g, e as u8, creator, out.len()));
                    out.push(elem);
                } else if e >= 0x1000 {
                    let block = (e >> 8) as u8;
                    let creator = creators.iter().find(|c| c.0 == g && c.1 == block);
                    let keep = creator.is_some_and(|c| {
                        self.cfg.safe_private.iter().any(|p| {
                            p.group == g && p.element == (e & 0xFF) as u8 && p.creator.trim() == c.2
                        })
                    });
                    if keep {
                        used_blocks.push((g, block));
                        if let Some(kept) = self.apply(Op::Keep, elem, ctx, depth)? {
                            out.push(kept);
                        }
                    } else {
                        ctx.rs.skip(&elem)?;
                        ctx.stats.removed += 1;
                    }
                } else {
                    ctx.rs.skip(&elem)?;
                    ctx.stats.removed += 1;
                }
                continue;
            }
            let op = self.rules.lookup(tag);
            if let Some(e) = self.apply(op, elem, ctx, depth)? {
                out.push(e);
            }
        }
        ctx.charset = parent_charset;
        if !creators.is_empty() {
            let unused: SmallVec<[usize; 4]> = creators
                .iter()
                .filter(|c| !used_blocks.contains(&(c.0, c.1)))
                .map(|c| c.3)
                .collect();
            ctx.stats.removed += unused.len() as u32;
            let mut i = 0;
            out.retain(|_| {
                let keep = !unused.contains(&i);
                i += 1;
                keep
            });
        }
        Ok(InMemDicomObject::from_element_iter(out))
    }

    fn apply(
        &self,
        op: Op,
        elem: InMemElement,
        ctx: &mut Ctx,
        depth: usize,
    ) -> Result<Option<InMemElement>, DeidError> {
        let tag = elem.tag();
        match op {
            Op::Remove => {
                ctx.rs.skip(&elem)?;
                ctx.stats.removed += 1;
                Ok(None)
            }
            Op::Keep | Op::KeepRefs => self.keep(elem, ctx, depth).map(Some),
            Op::Empty => {
                ctx.rs.skip(&elem)?;
                ctx.stats.emptied += 1;
                Ok(Some(match elem.value() {
                    Value::Sequence(_) => sequence(tag, Vec::new()),
                    _ => DataElement::new(tag, elem.vr(), PrimitiveValue::Empty),
                }))
            }
            Op::Dummy => {
                ctx.rs.skip(&elem)?;
                ctx.stats.replaced += 1;
                self.dummy(elem, ctx).map(Some)
            }
            Op::Clean => self.clean(elem, ctx, depth),
            Op::Uid => Ok(self.uid(elem, ctx)),
            Op::PatientId | Op::PatientName => {
                let current = ctx_text(&elem, ctx)?.trim_matches([' ', '\0']).to_owned();
                let (fmt, vr) = if op == Op::PatientId {
                    (&self.id_fmt, VR::LO)
                } else {
                    (&self.name_fmt, VR::PN)
                };
                let key = if op == Op::PatientId {
                    current.clone()
                } else {
                    ctx.patient_key.clone()
                };
                let v = self.pseudonym(fmt, &current, &key);
                ctx.stats.replaced += 1;
                text_element(tag, vr, &v, ctx).map(Some)
            }
        }
    }

    fn keep(
        &self,
        elem: InMemElement,
        ctx: &mut Ctx,
        depth: usize,
    ) -> Result<InMemElement, DeidError> {
        match elem.value() {
            Value::Sequence(_) => {
                let tag = elem.tag();
                let Value::Sequence(seq) = elem.into_value() else {
                    return Err(DeidError::Table("internal: sequence expected".into()));
                };
                let mut items = Vec::with_capacity(seq.items().len());
                for item in seq.into_items() {
                    items.push(self.process_dataset(item, ctx, depth + 1)?);
                }
                ctx.stats.kept += 1;
                Ok(sequence(tag, items))
            }
            Value::Primitive(PrimitiveValue::U16(words))
                if ctx.little_endian && elem.tag() == tags::PIXEL_DATA =>
            {
                // Same bytes, stored as a byte vector: dicom-rs then writes them in one
                // call instead of one call per 16-bit word (the main cost of writing).
                let mut bytes = vec![0u8; words.len() * 2];
                for (b, w) in bytes.chunks_exact_mut(2).zip(words.iter()) {
                    b.copy_from_slice(&w.to_le_bytes());
                }
                ctx.stats.kept += 1;
                Ok(DataElement::new(
                    elem.tag(),
                    elem.vr(),
                    PrimitiveValue::U8(SmallVec::from_vec(bytes)),
                ))
            }
            Value::Primitive(_) if charset::is_text_vr(elem.vr()) => {
                ctx.stats.kept += 1;
                keep_text(elem, ctx)
            }
            Value::Primitive(p) => {
                check_decoded(elem.tag(), p)?;
                ctx.stats.kept += 1;
                Ok(elem)
            }
            Value::PixelSequence(_) => {
                ctx.stats.kept += 1;
                Ok(elem)
            }
        }
    }

    fn dummy(&self, elem: InMemElement, ctx: &mut Ctx) -> Result<InMemElement, DeidError> {
        let tag = elem.tag();
        if let Value::Sequence(_) = elem.value() {
            return Ok(sequence(tag, vec![InMemDicomObject::new_empty()]));
        }
        let vr = effective_vr(tag, elem.vr());
        let v = match vr {
            VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UT => {
                return text_element(tag, vr, DUMMY_TEXT, ctx);
            }
            VR::AE | VR::CS | VR::UR => PrimitiveValue::from(DUMMY_TEXT),
            VR::AS => PrimitiveValue::from("000Y"),
            VR::DA => PrimitiveValue::from("19000101"),
            VR::DT => PrimitiveValue::from("19000101000000"),
            VR::TM => PrimitiveValue::from("000000"),
            VR::DS | VR::IS => PrimitiveValue::from("0"),
            VR::UI => {
                let olds = strings_of(elem.value());
                let first = olds.first().map(String::as_str).unwrap_or("");
                let new = self.remap_uid_counted(first, ctx);
                PrimitiveValue::from(if new.is_empty() {
                    self.remap_uid_counted("-", ctx)
                } else {
                    new
                })
            }
            VR::AT => PrimitiveValue::Tags(SmallVec::from_elem(Tag(0, 0), 1)),
            VR::US => PrimitiveValue::from(0u16),
            VR::SS => PrimitiveValue::from(0i16),
            VR::UL | VR::OL => PrimitiveValue::U32(SmallVec::from_elem(0, 1)),
            VR::SL => PrimitiveValue::from(0i32),
            VR::SV => PrimitiveValue::I64(SmallVec::from_elem(0, 1)),
            VR::UV | VR::OV => PrimitiveValue::U64(SmallVec::from_elem(0, 1)),
            VR::FL | VR::OF => PrimitiveValue::F32(SmallVec::from_elem(0.0, 1)),
            VR::FD | VR::OD => PrimitiveValue::F64(SmallVec::from_elem(0.0, 1)),
            VR::OW => PrimitiveValue::U16(SmallVec::from_elem(0, 1)),
            VR::OB | VR::UN | VR::SQ => PrimitiveValue::U8(SmallVec::from_elem(0, 2)),
        };
        Ok(DataElement::new(tag, vr, v))
    }

    fn clean(
        &self,
        elem: InMemElement,
        ctx: &mut Ctx,
        depth: usize,
    ) -> Result<Option<InMemElement>, DeidError> {
        let tag = elem.tag();
        if let Value::Sequence(_) = elem.value() {
            return self.keep(elem, ctx, depth).map(Some);
        }
        let Value::Primitive(p) = elem.value() else {
            ctx.stats.removed += 1;
            return Ok(None);
        };
        let vr = elem.vr();
        // free text: decoded with the full character set, kept only if every value is a
        // clean descriptor (an undecodable value is an error: quarantine)
        let clean_text = match vr {
            VR::LO | VR::SH | VR::UC => ctx_text(&elem, ctx)?.split('\\').all(descriptor::is_clean),
            VR::LT | VR::ST | VR::UT => descriptor::is_clean(&ctx_text(&elem, ctx)?),
            _ => false,
        };
        match vr {
            VR::DA | VR::DT => {
                let Some(days) = ctx.shift else {
                    // second pass: already shifted
                    return self.keep(elem, ctx, depth).map(Some);
                };
                let mut shifted: SmallVec<[String; 2]> = SmallVec::new();
                for s in strings_of(&Value::Primitive(p.clone())) {
                    let s = s.trim();
                    let r = if vr == VR::DA {
                        shift_da(s, days)
                    } else {
                        shift_dt(s, days)
                    };
                    match r {
                        Some(v) => shifted.push(v),
                        None => {
                            // not a date we can move: drop the value rather than keep it
                            ctx.stats.emptied += 1;
                            return Ok(Some(DataElement::new(tag, vr, PrimitiveValue::Empty)));
                        }
                    }
                }
                ctx.stats.dates_shifted += 1;
                Ok(Some(DataElement::new(
                    tag,
                    vr,
                    PrimitiveValue::Strs(shifted),
                )))
            }
            VR::TM => self.keep(elem, ctx, depth).map(Some),
            VR::LO | VR::LT | VR::SH | VR::ST | VR::UC | VR::UT if clean_text => {
                // only vocabulary words and harmless numbers: keep it as it is
                self.keep(elem, ctx, depth).map(Some)
            }
            VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UT => {
                ctx.stats.replaced += 1;
                text_element(tag, vr, CLEANED_TEXT, ctx).map(Some)
            }
            VR::AE | VR::CS | VR::UR => {
                ctx.stats.replaced += 1;
                Ok(Some(DataElement::new(
                    tag,
                    vr,
                    PrimitiveValue::from(CLEANED_TEXT),
                )))
            }
            VR::DS | VR::IS => {
                ctx.stats.emptied += 1;
                Ok(Some(DataElement::new(tag, vr, PrimitiveValue::Empty)))
            }
            // binary (overlay/curve data, UN...): cannot be cleaned, remove
            _ => {
                ctx.rs.skip(&elem)?;
                ctx.stats.removed += 1;
                Ok(None)
            }
        }
    }

    fn uid(&self, elem: InMemElement, ctx: &mut Ctx) -> Option<InMemElement> {
        let tag = elem.tag();
        let olds: SmallVec<[String; 2]> = match elem.value() {
            Value::Primitive(PrimitiveValue::Empty) => return Some(elem),
            Value::Primitive(PrimitiveValue::Strs(v)) => v.iter().cloned().collect(),
            Value::Primitive(PrimitiveValue::Str(s)) => s.split('\\').map(str::to_owned).collect(),
            Value::Primitive(PrimitiveValue::U8(b)) => match std::str::from_utf8(b) {
                Ok(s) => s.split('\\').map(str::to_owned).collect(),
                Err(_) => {
                    ctx.stats.removed += 1;
                    return None;
                }
            },
            _ => {
                ctx.stats.removed += 1;
                return None;
            }
        };
        let new: SmallVec<[String; 2]> = olds
            .iter()
            .map(|u| self.remap_uid_counted(u, ctx))
            .collect();
        Some(DataElement::new(tag, VR::UI, PrimitiveValue::Strs(new)))
    }

    fn remap_uid_counted(&self, uid: &str, ctx: &mut Ctx) -> String {
        let new = self.remap_uid(uid);
        if new != uid.trim_matches([' ', '\0']) {
            ctx.stats.uids_remapped += 1;
        }
        new
    }

    /// Patient Identity Removed, De-identification Method (+ code sequence), Longitudinal
    /// Temporal Information Modified.
    fn mark(&self, obj: &mut DefaultDicomObject) {
        obj.put(DataElement::new(
            tags::PATIENT_IDENTITY_REMOVED,
            VR::CS,
            PrimitiveValue::from("YES"),
        ));
        obj.put(DataElement::new(
            tags::DEIDENTIFICATION_METHOD,
            VR::LO,
            PrimitiveValue::from(super::DEIDENTIFICATION_METHOD),
        ));
        let items: Vec<InMemDicomObject> = self
            .codes
            .iter()
            .map(|(code, meaning)| {
                InMemDicomObject::from_element_iter([
                    DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(*code)),
                    DataElement::new(
                        tags::CODING_SCHEME_DESIGNATOR,
                        VR::SH,
                        PrimitiveValue::from("DCM"),
                    ),
                    DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(*meaning)),
                ])
            })
            .collect();
        obj.put(sequence(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, items));
        let ltim = if self.cfg.retain_long_full_dates {
            "UNMODIFIED"
        } else if self.cfg.retain_long_modified_dates {
            "MODIFIED"
        } else {
            "REMOVED"
        };
        obj.put(DataElement::new(
            tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            VR::CS,
            PrimitiveValue::from(ltim),
        ));
    }

    fn fix_meta(&self, obj: &mut DefaultDicomObject, ctx: &mut Ctx) {
        let op = self.rules.lookup(tags::MEDIA_STORAGE_SOP_INSTANCE_UID);
        let old = obj.meta().media_storage_sop_instance_uid().to_owned();
        let new = if op == Op::Keep {
            old
        } else {
            self.remap_uid_counted(&old, ctx)
        };
        let meta = obj.meta_mut();
        meta.media_storage_sop_instance_uid = pad(new, '\0');
        meta.implementation_class_uid = pad(super::IMPLEMENTATION_CLASS_UID.to_owned(), '\0');
        meta.implementation_version_name =
            Some(pad(super::IMPLEMENTATION_VERSION_NAME.to_owned(), ' '));
        meta.source_application_entity_title = None;
        meta.sending_application_entity_title = None;
        meta.receiving_application_entity_title = None;
        meta.private_information_creator_uid = None;
        meta.private_information = None;
        meta.update_information_group_length();
    }
}

fn pad(mut s: String, c: char) -> String {
    if s.len() % 2 == 1 {
        s.push(c);
    }
    s
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// The VR to write a replacement with: the dictionary's when the element came as UN.
fn effective_vr(tag: Tag, vr: VR) -> VR {
    if vr != VR::UN {
        return vr;
    }
    StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::UN)
}

fn strings_of(
    v: &Value<InMemDicomObject, dicom_object::mem::InMemFragment>,
) -> SmallVec<[String; 2]> {
    match v {
        Value::Primitive(PrimitiveValue::Strs(s)) => s.clone(),
        Value::Primitive(PrimitiveValue::Str(s)) => SmallVec::from_elem(s.clone(), 1),
        Value::Primitive(p) => p.to_multi_str().iter().cloned().collect(),
        _ => SmallVec::new(),
    }
}

/// dicom-rs replaces bytes it cannot decode with `\ooo` (backslash, three octal digits).
/// In multi-valued text a backslash cannot survive decoding (it separates values), so any
/// backslash means a decoding failure; in single-valued text (LT, ST, UT, UR) we look for
/// the escape pattern itself.
fn check_decoded(tag: Tag, p: &PrimitiveValue) -> Result<(), DeidError> {
    let bad = match p {
        PrimitiveValue::Strs(v) => v.iter().any(|s| s.contains('\\')),
        PrimitiveValue::Str(s) => has_octal_escape(s),
        _ => false,
    };
    if bad {
        Err(DeidError::Undecodable(tag))
    } else {
        Ok(())
    }
}

fn has_octal_escape(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(4).any(|w| {
        w[0] == b'\\'
            && (b'0'..=b'3').contains(&w[1])
            && (b'0'..=b'7').contains(&w[2])
            && (b'0'..=b'7').contains(&w[3])
    })
}

/// dicom-rs's text codec state. Its parser switches codec on every Specific Character Set
/// element, at any depth and in stream order, using the first value only (an unknown or
/// empty first value leaves it unchanged) and never restores it at the end of an item; its
/// writer does the same with the elements it writes. The engine replays both so that it
/// knows the bytes behind every decoded string it reads, and writes strings that encode
/// back to the intended bytes even when removed items change the writer's state.
#[derive(Debug, Clone, Default)]
struct RsCodecs {
    read: SpecificCharacterSet,
    write: SpecificCharacterSet,
}

impl RsCodecs {
    /// The data set element `elem` was read (kept or not).
    fn read(&mut self, elem: &InMemElement) {
        update_rs(&mut self.read, elem);
    }

    /// `elem` will be written as it is.
    fn write(&mut self, elem: &InMemElement) {
        update_rs(&mut self.write, elem);
    }

    /// `elem` was read but is not written (removed, emptied or replaced): replay the
    /// Specific Character Set elements of its items for the reader only.
    fn skip(&mut self, elem: &InMemElement) -> Result<(), DeidError> {
        scan_rs(&mut self.read, elem)
    }
}

fn update_rs(state: &mut SpecificCharacterSet, elem: &InMemElement) {
    if elem.tag() != tags::SPECIFIC_CHARACTER_SET {
        return;
    }
    let first = match elem.value() {
        Value::Primitive(PrimitiveValue::Strs(v)) => v.first().map(String::as_str),
        Value::Primitive(PrimitiveValue::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    if let Some(cs) = first.and_then(SpecificCharacterSet::from_code) {
        *state = cs;
    }
}

/// Replay the Specific Character Set elements of `elem` and its items, in stream order.
/// Iterative (a stack of item iterators), and refused beyond [`MAX_DEPTH`] levels like
/// every other walk of the engine.
fn scan_rs(state: &mut SpecificCharacterSet, elem: &InMemElement) -> Result<(), DeidError> {
    type Items<'a> = std::slice::Iter<'a, InMemDicomObject>;
    type Elems<'a> = <&'a InMemDicomObject as IntoIterator>::IntoIter;
    let items = match elem.value() {
        Value::Sequence(seq) => seq.items().iter(),
        Value::Primitive(_) => {
            update_rs(state, elem);
            return Ok(());
        }
        Value::PixelSequence(_) => return Ok(()),
    };
    // one entry per open sequence: its remaining items, and the elements left of the
    // current item
    let mut stack: Vec<(Items<'_>, Option<Elems<'_>>)> = vec![(items, None)];
    while let Some((items, elems)) = stack.last_mut() {
        let next = match elems.as_mut().and_then(Iterator::next) {
            Some(e) => e,
            None => match items.next() {
                Some(item) => {
                    *elems = Some(item.into_iter());
                    continue;
                }
                None => {
                    stack.pop();
                    continue;
                }
            },
        };
        match next.value() {
            Value::Sequence(seq) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(DeidError::TooDeep(MAX_DEPTH));
                }
                stack.push((seq.items().iter(), None));
            }
            Value::Primitive(_) => update_rs(state, next),
            Value::PixelSequence(_) => {}
        }
    }
    Ok(())
}

/// Parse a Specific Character Set element; an unknown or invalid combination of terms is
/// an error (its values would be decoded with the wrong code page).
fn parse_charset(elem: &InMemElement) -> Result<CharacterSet, DeidError> {
    let terms: SmallVec<[String; 2]> = match elem.value() {
        Value::Primitive(PrimitiveValue::Str(s)) => s.split('\\').map(str::to_owned).collect(),
        v => strings_of(v),
    };
    CharacterSet::from_terms(&terms[..]).map_err(|e| match e {
        charset::CharsetError::UnknownTerm(t) | charset::CharsetError::NoExtensions(t) => {
            DeidError::UnsupportedCharset(t)
        }
        _ => DeidError::UnsupportedCharset(String::new()),
    })
}

/// Whether the codec of dicom-rs decodes every byte as one char U+0000..=U+00FF (ISO-8859-1:
/// its "default" and ISO_IR 100 codecs), so that it never substitutes `\ooo` escapes.
fn rs_is_latin1(rs: &SpecificCharacterSet) -> bool {
    *rs == SpecificCharacterSet::ISO_IR_6 || *rs == SpecificCharacterSet::ISO_IR_100
}

/// The bytes behind a text value as dicom-rs decoded it with `rs` (and will encode it
/// again), or `None` when dicom-rs could not decode them (its `\ooo` substitutes).
fn raw_text<'a>(p: &'a PrimitiveValue, rs: &SpecificCharacterSet) -> Option<Cow<'a, [u8]>> {
    let encode = |s: &str| -> Option<Vec<u8>> {
        if s.is_ascii() {
            Some(s.as_bytes().to_vec())
        } else {
            rs.encode(s).ok()
        }
    };
    match p {
        PrimitiveValue::Empty => Some(Cow::Borrowed(&[])),
        PrimitiveValue::Str(s) => {
            if !rs_is_latin1(rs) && has_octal_escape(s) {
                return None;
            }
            if s.is_ascii() {
                return Some(Cow::Borrowed(s.as_bytes()));
            }
            encode(s).map(Cow::Owned)
        }
        PrimitiveValue::Strs(v) => {
            // dicom-rs splits on the byte '\' before decoding: a '\' inside a value is
            // one of its `\ooo` substitutes
            if v.iter().any(|s| s.contains('\\')) {
                return None;
            }
            if v.len() == 1 && v[0].is_ascii() {
                return Some(Cow::Borrowed(v[0].as_bytes()));
            }
            let mut out = Vec::new();
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b'\\');
                }
                out.extend_from_slice(&encode(s)?);
            }
            Some(Cow::Owned(out))
        }
        PrimitiveValue::U8(b) => Some(Cow::Borrowed(&b[..])),
        other => Some(Cow::Owned(other.to_str().into_owned().into_bytes())),
    }
}

/// The strings dicom-rs must be given so that its writer, in state `rs`, writes `raw`.
fn rs_value(raw: &[u8], multi: bool, rs: &SpecificCharacterSet) -> Option<PrimitiveValue> {
    let conv = |b: &[u8]| -> Option<String> {
        let s = rs.decode(b).ok()?;
        (rs.encode(&s).ok()? == b).then_some(s)
    };
    if multi {
        let parts: Option<SmallVec<[String; 2]>> = raw.split(|c| *c == b'\\').map(conv).collect();
        parts.map(PrimitiveValue::Strs)
    } else {
        conv(raw).map(PrimitiveValue::Str)
    }
}

fn plain_ascii(b: &[u8]) -> bool {
    b.is_ascii() && !b.contains(&0x1B)
}

/// Decode a text element with the full Specific Character Set of its data set.
fn decode_text(
    elem: &InMemElement,
    charset: &CharacterSet,
    rs: &SpecificCharacterSet,
) -> Result<String, DeidError> {
    let tag = elem.tag();
    let Value::Primitive(p) = elem.value() else {
        return Ok(String::new());
    };
    if !charset::is_text_vr(elem.vr()) {
        check_decoded(tag, p)?;
        return Ok(strings_of(elem.value()).join("\\"));
    }
    let raw = raw_text(p, rs).ok_or(DeidError::Undecodable(tag))?;
    charset
        .decode(&raw, elem.vr())
        .map_err(|_| DeidError::Undecodable(tag))
}

/// The decoded value (all values, `\`-separated) of `elem` in the walk's context.
fn ctx_text(elem: &InMemElement, ctx: &Ctx) -> Result<String, DeidError> {
    decode_text(elem, &ctx.charset, &ctx.rs.read)
}

/// Keep a text element: its bytes must decode with the declared character sets; when
/// dicom-rs's writer will be in another state than its reader was, the strings are
/// rebuilt so that the same bytes are written.
fn keep_text(elem: InMemElement, ctx: &mut Ctx) -> Result<InMemElement, DeidError> {
    let tag = elem.tag();
    let vr = elem.vr();
    let Value::Primitive(p) = elem.value() else {
        return Ok(elem);
    };
    let raw = raw_text(p, &ctx.rs.read).ok_or(DeidError::Undecodable(tag))?;
    // plain ASCII is valid in every character set and written identically by every codec
    if plain_ascii(&raw) {
        return Ok(elem);
    }
    ctx.charset
        .decode(&raw, vr)
        .map_err(|_| DeidError::Undecodable(tag))?;
    if ctx.rs.read == ctx.rs.write || matches!(p, PrimitiveValue::U8(_) | PrimitiveValue::Empty) {
        return Ok(elem);
    }
    let multi = matches!(p, PrimitiveValue::Strs(_));
    let v = rs_value(&raw, multi, &ctx.rs.write).ok_or(DeidError::Undecodable(tag))?;
    Ok(DataElement::new(tag, vr, v))
}

/// A new text value (replacement, pseudonym), encoded with the character sets in force:
/// the bytes are valid for them (ISO 2022 escapes where needed, back to value 1 before
/// delimiters and at the end), then handed to dicom-rs as strings that write those bytes.
fn text_element(tag: Tag, vr: VR, text: &str, ctx: &Ctx) -> Result<InMemElement, DeidError> {
    let bytes = ctx
        .charset
        .encode(text, vr)
        .map_err(|_| DeidError::Unencodable(tag))?;
    if plain_ascii(&bytes) && !text.contains('\\') {
        return Ok(DataElement::new(tag, vr, PrimitiveValue::from(text)));
    }
    let multi = !charset::delimiters(vr).is_empty();
    let v = rs_value(&bytes, multi, &ctx.rs.write).ok_or(DeidError::Unencodable(tag))?;
    Ok(DataElement::new(tag, vr, v))
}

/// Attributes read before the walk (originals for the vault, pseudonym key).
const IDENTIFIERS: [Tag; 5] = [
    tags::PATIENT_ID,
    tags::PATIENT_NAME,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DATE,
    tags::STUDY_INSTANCE_UID,
];
/// Attributes read back from the output for the report.
const OUTPUT_IDENTIFIERS: [Tag; 8] = [
    tags::PATIENT_ID,
    tags::PATIENT_NAME,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DATE,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SOP_INSTANCE_UID,
    tags::SOP_CLASS_UID,
];

/// Decoded, trimmed top-level values of `wanted` (in tag order), with the top-level
/// character set and dicom-rs's codec state replayed in stream order.
fn top_texts<const N: usize>(
    obj: &InMemDicomObject,
    wanted: [Tag; N],
) -> Result<[Option<String>; N], DeidError> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    let Some(last) = wanted.iter().max().copied() else {
        return Ok(out);
    };
    let mut cs = CharacterSet::default();
    let mut rs = SpecificCharacterSet::default();
    for elem in obj.iter() {
        let tag = elem.tag();
        if tag > last {
            break;
        }
        if tag == tags::SPECIFIC_CHARACTER_SET {
            cs = parse_charset(elem)?;
        }
        scan_rs(&mut rs, elem)?;
        if let Some(i) = wanted.iter().position(|t| *t == tag) {
            let v = decode_text(elem, &cs, &rs)?;
            out[i] = Some(v.trim_matches([' ', '\0']).to_owned());
        }
    }
    Ok(out)
}

/// Decoded, trimmed value of a top-level attribute (Specific Character Set honoured).
pub(crate) fn top_level_text(
    obj: &InMemDicomObject,
    tag: Tag,
) -> Result<Option<String>, DeidError> {
    top_texts(obj, [tag]).map(|[v]| v)
}

/// The creator string of a private creator element (LO, or UN bytes in implicit VR).
fn private_text(v: &Value<InMemDicomObject, dicom_object::mem::InMemFragment>) -> String {
    let s = match v {
        Value::Primitive(PrimitiveValue::U8(b)) => String::from_utf8_lossy(b).into_owned(),
        other => strings_of(other).join("\\"),
    };
    s.trim_matches([' ', '\0']).to_owned()
}

fn shift_da(s: &str, days: i64) -> Option<String> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = NaiveDate::parse_from_str(s, "%Y%m%d").ok()?;
    let n = d.checked_add_signed(TimeDelta::try_days(days)?)?;
    let out = n.format("%Y%m%d").to_string();
    (out.len() == 8).then_some(out)
}

fn shift_dt(s: &str, days: i64) -> Option<String> {
    if s.len() < 8 || !s.is_char_boundary(8) {
        return None;
    }
    let (date, rest) = s.split_at(8);
    if !rest
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'+' || b == b'-')
    {
        return None;
    }
    let mut out = shift_da(date, days)?;
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
pub(crate) fn rules_for(cfg: &DeidConfig) -> Result<Rules, DeidError> {
    Rules::compile(cfg)
}

/// Every text value of `obj` at any depth, decoded with the character sets in force, in
/// stream order (tests: the output must decode validly).
#[cfg(test)]
pub(crate) fn decode_all_text(obj: &InMemDicomObject) -> Result<Vec<(Tag, String)>, DeidError> {
    fn walk(
        ds: &InMemDicomObject,
        cs: &CharacterSet,
        rs: &mut SpecificCharacterSet,
        out: &mut Vec<(Tag, String)>,
        depth: usize,
    ) -> Result<(), DeidError> {
        if depth > MAX_DEPTH {
            return Err(DeidError::TooDeep(MAX_DEPTH));
        }
        let mut cs = cs.clone();
        for elem in ds.iter() {
            if elem.tag() == tags::SPECIFIC_CHARACTER_SET {
                cs = parse_charset(elem)?;
                update_rs(rs, elem);
                continue;
            }
            match elem.value() {
                Value::Sequence(seq) => {
                    for item in seq.items() {
                        walk(item, &cs, rs, out, depth + 1)?;
                    }
                }
                Value::Primitive(_) if charset::is_text_vr(elem.vr()) => {
                    out.push((elem.tag(), decode_text(elem, &cs, rs)?));
                }
                _ => {}
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    let mut rs = SpecificCharacterSet::default();
    walk(obj, &CharacterSet::default(), &mut rs, &mut out, 0)?;
    Ok(out)
}
