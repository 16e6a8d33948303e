//! Burned-in PHI screening: decide from the header whether pixel data may carry
//! identifying text, and blank configured rectangles in native pixel data.
//!
//! The policy is data (`core/data/screening-policy.toml`, overridable in the config).

use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Deserialize;

use super::DeidError;

/// Built-in default policy.
pub const DEFAULT_POLICY: &str = include_str!("../../data/screening-policy.toml");

/// Screening policy. Missing fields take the built-in defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScreeningPolicy {
    /// Modalities (0008,0060) whose images usually carry burned-in text.
    pub usually_burned_in_modalities: Vec<String>,
    /// SOP classes (0008,0016) whose instances usually carry burned-in text or are documents.
    pub usually_burned_in_sop_classes: Vec<String>,
    /// Rectangles to blank, per device and image size.
    pub pixel_rules: Vec<PixelRule>,
    /// Clean Pixel Data option; set by the engine from [`super::DeidConfig`].
    #[serde(skip)]
    pub clean_pixel_data: bool,
    /// Set when the built-in policy could not be read: quarantine everything.
    #[serde(skip)]
    pub quarantine_everything: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    usually_burned_in_modalities: Vec<String>,
    usually_burned_in_sop_classes: Vec<String>,
    pixel_rules: Vec<PixelRule>,
}

impl ScreeningPolicy {
    /// The built-in policy, or an error if its data file does not parse.
    pub fn builtin() -> Result<ScreeningPolicy, DeidError> {
        let f: PolicyFile = toml::from_str(DEFAULT_POLICY)
            .map_err(|e| DeidError::Table(format!("screening-policy.toml: {e}")))?;
        Ok(ScreeningPolicy {
            usually_burned_in_modalities: f.usually_burned_in_modalities,
            usually_burned_in_sop_classes: f.usually_burned_in_sop_classes,
            pixel_rules: f.pixel_rules,
            clean_pixel_data: false,
            quarantine_everything: false,
        })
    }

    pub fn validate(&self) -> Result<(), DeidError> {
        for (i, r) in self.pixel_rules.iter().enumerate() {
            if r.rows == 0 || r.columns == 0 || r.rectangles.is_empty() {
                return Err(DeidError::Config(format!(
                    "screening.pixel_rules[{i}]: rows, columns and at least one rectangle are required"
                )));
            }
            for q in &r.rectangles {
                if q.width == 0 || q.height == 0 {
                    return Err(DeidError::Config(format!(
                        "screening.pixel_rules[{i}]: empty rectangle"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Default for ScreeningPolicy {
    fn default() -> Self {
        ScreeningPolicy::builtin().unwrap_or(ScreeningPolicy {
            usually_burned_in_modalities: Vec::new(),
            usually_burned_in_sop_classes: Vec::new(),
            pixel_rules: Vec::new(),
            clean_pixel_data: false,
            quarantine_everything: true,
        })
    }
}

/// Rectangles to blank in the images of one device model at one size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelRule {
    /// Manufacturer (0008,0070), compared trimmed and case-insensitively.
    pub manufacturer: String,
    /// Manufacturer's Model Name (0008,1090), same comparison.
    pub model: String,
    pub rows: u32,
    pub columns: u32,
    pub rectangles: Vec<Rect>,
}

/// A rectangle in pixel coordinates (origin top-left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The screening decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screening {
    /// No reason to suspect burned-in text.
    Pass,
    /// Blank these rectangles (see [`blank_rectangles`]), then de-identify.
    CleanPixels(Vec<Rect>),
    /// Keep on-prem; the reason names no PHI.
    Quarantine(String),
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let v = obj.get(tag)?.value().to_str().ok()?;
    Some(v.trim_matches([' ', '\0']).to_owned())
}

fn uint(obj: &DefaultDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag)?.value().to_int::<u32>().ok()
}

/// Decide whether `obj` may be uploaded as it is, needs pixel cleaning, or must be
/// quarantined.
pub fn screen(obj: &DefaultDicomObject, policy: &ScreeningPolicy) -> Screening {
    if policy.quarantine_everything {
        return Screening::Quarantine("screening policy unavailable".into());
    }
    let burned_in =
        text(obj, tags::BURNED_IN_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("YES"));
    let modality = text(obj, tags::MODALITY).unwrap_or_default();
    let sop_class = text(obj, tags::SOP_CLASS_UID)
        .unwrap_or_else(|| obj.meta().media_storage_sop_class_uid().to_owned());
    let reason = if burned_in {
        Some("Burned In Annotation is YES".to_owned())
    } else if policy
        .usually_burned_in_modalities
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&modality))
    {
        Some(format!(
            "modality {modality} usually carries burned-in text"
        ))
    } else if policy.usually_burned_in_sop_classes.contains(&sop_class) {
        Some(format!(
            "SOP class {sop_class} usually carries burned-in text"
        ))
    } else {
        None
    };
    let Some(reason) = reason else {
        return Screening::Pass;
    };
    if !policy.clean_pixel_data {
        return Screening::Quarantine(reason);
    }
    // decoded with the full Specific Character Set (e.g. a Japanese model name); a value
    // that does not decode matches no rule
    let decoded = |t: Tag| {
        super::engine::top_level_text(obj, t)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let manufacturer = decoded(tags::MANUFACTURER);
    let model = decoded(tags::MANUFACTURER_MODEL_NAME);
    let rows = uint(obj, tags::ROWS);
    let columns = uint(obj, tags::COLUMNS);
    let rule = policy.pixel_rules.iter().find(|r| {
        r.manufacturer.trim().eq_ignore_ascii_case(&manufacturer)
            && r.model.trim().eq_ignore_ascii_case(&model)
            && Some(r.rows) == rows
            && Some(r.columns) == columns
    });
    let Some(rule) = rule else {
        return Screening::Quarantine(format!("{reason}; no pixel-cleaning rule matches"));
    };
    if !is_native(obj) {
        return Screening::Quarantine(format!(
            "{reason}; pixel data is compressed and cannot be cleaned"
        ));
    }
    Screening::CleanPixels(rule.rectangles.clone())
}

fn is_native(obj: &DefaultDicomObject) -> bool {
    let ts = obj.meta().transfer_syntax();
    match TransferSyntaxRegistry.get(ts) {
        Some(ts) => !ts.is_encapsulated_pixel_data(),
        None => false,
    }
}

/// Blank (set to zero) `rects` in every frame of the native pixel data of `obj`, then set
/// Burned In Annotation to NO. Compressed or unusual pixel data is an error (quarantine).
pub fn blank_rectangles(obj: &mut DefaultDicomObject, rects: &[Rect]) -> Result<(), DeidError> {
    let bad = |m: &str| DeidError::Pixel(m.to_owned());
    if !is_native(obj) {
        return Err(bad("compressed transfer syntax"));
    }
    let rows = uint(obj, tags::ROWS).ok_or_else(|| bad("no Rows"))? as usize;
    let cols = uint(obj, tags::COLUMNS).ok_or_else(|| bad("no Columns"))? as usize;
    let bits = uint(obj, tags::BITS_ALLOCATED).ok_or_else(|| bad("no Bits Allocated"))?;
    let spp = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as usize;
    let planar = uint(obj, tags::PLANAR_CONFIGURATION).unwrap_or(0) == 1;
    let frames = text(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    if !matches!(bits, 8 | 16 | 32 | 64) || !(1..=4).contains(&spp) {
        return Err(bad("unsupported Bits Allocated or Samples per Pixel"));
    }
    let bps = bits as usize / 8;
    let need = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(spp * bps))
        .and_then(|n| n.checked_mul(frames))
        .ok_or_else(|| bad("image too large"))?;

    let Some(elem) = obj.take(tags::PIXEL_DATA) else {
        return Err(bad("no Pixel Data"));
    };
    let (header, value) = elem.into_parts();
    let Value::Primitive(mut pv) = value else {
        return Err(bad("encapsulated Pixel Data"));
    };
    let have = match &pv {
        PrimitiveValue::U8(v) => v.len(),
        PrimitiveValue::U16(v) => v.len() * 2,
        _ => return Err(bad("unexpected Pixel Data value type")),
    };
    if have < need {
        return Err(bad("Pixel Data shorter than Rows x Columns x frames"));
    }
    let mut zero = |start: usize, len: usize| match &mut pv {
        PrimitiveValue::U8(v) => v[start..start + len].fill(0),
        PrimitiveValue::U16(v) if start.is_multiple_of(2) && len.is_multiple_of(2) => {
            v[start / 2..(start + len) / 2].fill(0)
        }
        PrimitiveValue::U16(v) => {
            // byte i of little-endian OW is the low (even i) or high byte of word i/2
            for i in start..start + len {
                let w = &mut v[i / 2];
                *w &= if i % 2 == 0 { 0xFF00 } else { 0x00FF };
            }
        }
        _ => {}
    };
    for f in 0..frames {
        for r in rects {
            let x0 = (r.x as usize).min(cols);
            let x1 = (r.x as usize).saturating_add(r.width as usize).min(cols);
            let y0 = (r.y as usize).min(rows);
            let y1 = (r.y as usize).saturating_add(r.height as usize).min(rows);
            if x0 >= x1 {
                continue;
            }
            for y in y0..y1 {
                if planar {
                    for s in 0..spp {
                        let start = (((f * spp + s) * rows + y) * cols + x0) * bps;
                        zero(start, (x1 - x0) * bps);
                    }
                } else {
                    let start = ((f * rows + y) * cols + x0) * spp * bps;
                    zero(start, (x1 - x0) * spp * bps);
                }
            }
        }
    }
    obj.put(DataElement::new(header.tag, header.vr, pv));
    obj.put(DataElement::new(
        tags::BURNED_IN_ANNOTATION,
        VR::CS,
        PrimitiveValue::from("NO"),
    ));
    Ok(())
}
