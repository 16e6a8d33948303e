//! De-identification before anything leaves the gateway: the PS3.15 Annex E engine of
//! `mado-core` ([`mado_core::deid::Engine`]), built once at start-up from the `[deid]`
//! section and shared by every worker.
//!
//! [`deidentify`] consumes an identified object and returns either a [`Deidentified`] one
//! (the only type the uploader accepts) or a quarantine decision. Screening for burned-in
//! PHI runs first unless the instance was released from quarantine by an operator
//! (`skip_screening`); everything else of the profile always applies. The UIDs of the
//! result (object key, registration) are read back from the de-identified object, so
//! they are the engine's remapped ones.

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use mado_core::deid::{Engine, Outcome, Report};
use mado_core::{SeriesUid, SopInstanceUid, StudyUid, Uid};

pub use mado_core::deid::Engine as DeidEngine;

#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    #[error(transparent)]
    Engine(#[from] mado_core::deid::DeidError),
    #[error("missing or empty required attribute {0}")]
    Missing(&'static str),
    #[error("invalid UID in {0}")]
    BadUid(&'static str),
}

/// Build the engine from the gateway's `[deid]` section.
pub fn engine(cfg: &crate::config::DeidConfig) -> Result<Engine, DeidError> {
    use secrecy::ExposeSecret;
    Ok(Engine::new(
        &cfg.engine_config(),
        cfg.secret.expose_secret().as_bytes(),
    )?)
}

/// Everything the upload workers share: the engine (built once) and the vault.
#[derive(Debug)]
pub struct Pipeline {
    pub engine: Engine,
    /// `None` when `[vault] enabled = false`.
    pub vault: Option<crate::vault::Vault>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("[deid]: {0}")]
    Deid(#[from] DeidError),
    #[error("[vault]: {0}")]
    Vault(#[from] crate::vault::VaultError),
}

impl Pipeline {
    /// Build the engine and open the vault (`<spool.dir>/vault.jsonl` by default).
    pub fn from_config(cfg: &crate::config::GatewayConfig) -> Result<Pipeline, PipelineError> {
        let engine = engine(&cfg.deid)?;
        let vault = if cfg.vault.enabled {
            Some(crate::vault::Vault::open(
                &cfg.vault.file(&cfg.spool.dir),
                &cfg.vault.key_material()?,
            )?)
        } else {
            None
        };
        Ok(Pipeline { engine, vault })
    }

    /// Engine only, no vault (tests, batch runs).
    pub fn without_vault(engine: Engine) -> Pipeline {
        Pipeline {
            engine,
            vault: None,
        }
    }
}

/// A de-identified instance. Only [`deidentify`] builds one, so the uploader (which takes
/// only this type) cannot be handed an identified object.
#[derive(Debug)]
pub struct Deidentified {
    obj: DefaultDicomObject,
    study: StudyUid,
    series: SeriesUid,
    sop: SopInstanceUid,
    sop_class: Uid,
    transfer_syntax: Uid,
    report: Box<Report>,
}

impl Deidentified {
    pub fn object(&self) -> &DefaultDicomObject {
        &self.obj
    }
    pub fn study(&self) -> &StudyUid {
        &self.study
    }
    pub fn series(&self) -> &SeriesUid {
        &self.series
    }
    pub fn sop_instance(&self) -> &SopInstanceUid {
        &self.sop
    }
    pub fn sop_class(&self) -> &Uid {
        &self.sop_class
    }
    pub fn transfer_syntax(&self) -> &Uid {
        &self.transfer_syntax
    }
    /// The engine's report: pseudonyms, and the originals for the on-prem vault (PHI).
    pub fn report(&self) -> &Report {
        &self.report
    }
    /// The object, for serialisation (still de-identified).
    pub fn into_object(self) -> DefaultDicomObject {
        self.obj
    }
}

/// What [`deidentify`] decided.
#[derive(Debug)]
pub enum DeidOutcome {
    Deidentified(Box<Deidentified>),
    /// Keep on-prem; the reason names no PHI.
    Quarantine(String),
}

/// De-identify `obj` with `engine`. An error means: quarantine the original.
pub fn deidentify(
    mut obj: DefaultDicomObject,
    engine: &Engine,
    skip_screening: bool,
) -> Result<DeidOutcome, DeidError> {
    // Type 1 identifiers must be there before we start (fail closed).
    for (tag, name) in [
        (tags::SOP_CLASS_UID, "SOPClassUID"),
        (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
        (tags::SERIES_INSTANCE_UID, "SeriesInstanceUID"),
        (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
    ] {
        text_of(&obj, tag, name)?;
    }
    let report = if skip_screening {
        Box::new(engine.deidentify(&mut obj)?)
    } else {
        match engine.process(&mut obj)? {
            Outcome::Deidentified(r) => r,
            Outcome::Quarantine(reason) => return Ok(DeidOutcome::Quarantine(reason)),
        }
    };
    let sop_class = Uid::parse(&text_of(&obj, tags::SOP_CLASS_UID, "SOPClassUID")?)
        .map_err(|_| DeidError::BadUid("SOPClassUID"))?;
    let study = StudyUid::parse(&text_of(
        &obj,
        tags::STUDY_INSTANCE_UID,
        "StudyInstanceUID",
    )?)
    .map_err(|_| DeidError::BadUid("StudyInstanceUID"))?;
    let series = SeriesUid::parse(&text_of(
        &obj,
        tags::SERIES_INSTANCE_UID,
        "SeriesInstanceUID",
    )?)
    .map_err(|_| DeidError::BadUid("SeriesInstanceUID"))?;
    let sop = SopInstanceUid::parse(&text_of(&obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?)
        .map_err(|_| DeidError::BadUid("SOPInstanceUID"))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let transfer_syntax = Uid::parse(&ts).map_err(|_| DeidError::BadUid("TransferSyntaxUID"))?;
    Ok(DeidOutcome::Deidentified(Box::new(Deidentified {
        obj,
        study,
        series,
        sop,
        sop_class,
        transfer_syntax,
        report,
    })))
}

fn text_of(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<String, DeidError> {
    let e = obj.get(tag).ok_or(DeidError::Missing(name))?;
    let s = e.to_str().map_err(|_| DeidError::Missing(name))?;
    let s = s.trim_end_matches(['\0', ' ']).to_string();
    if s.is_empty() {
        return Err(DeidError::Missing(name));
    }
    Ok(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    pub(crate) fn test_engine() -> Engine {
        let cfg: crate::config::GatewayConfig =
            mado_core::config::load(crate::config::DEFAULTS, None, "MADO_GATEWAY_TEST_NONE__")
                .unwrap();
        engine(&cfg.deid).unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn done(o: DeidOutcome) -> Deidentified {
        match o {
            DeidOutcome::Deidentified(d) => *d,
            DeidOutcome::Quarantine(r) => panic!("quarantined: {r}"),
        }
    }

    #[test]
    fn no_original_value_in_output_file() {
        let e = test_engine();
        for ts in [
            dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN,
            dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ] {
            let d = done(deidentify(sample(ts), &e, false).unwrap());
            let mut out = Vec::new();
            d.object().write_all(&mut out).unwrap();
            for orig in ORIGINALS {
                assert!(!contains(&out, orig.as_bytes()), "{orig} leaked with {ts}");
            }
            assert!(out[..128].iter().all(|b| *b == 0), "preamble not zeroed");
            let back = dicom_object::from_reader(&out[128..]).unwrap();
            let sop = back
                .element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(sop.trim_end_matches('\0'), d.sop_instance().as_str());
            assert_eq!(
                back.meta()
                    .media_storage_sop_instance_uid()
                    .trim_end_matches('\0'),
                d.sop_instance().as_str()
            );
            assert_ne!(d.study().as_str(), ORIG_STUDY);
            assert_eq!(
                d.report().pseudonym.study_instance_uid.as_deref(),
                Some(d.study().as_str())
            );
            assert_eq!(d.report().original.patient_id.as_deref(), Some(ORIG_ID));
            let id = back.element(tags::PATIENT_ID).unwrap().to_str().unwrap();
            assert!(id.trim_end().starts_with("ANON-"), "{id}");
            assert!(back.element(tags::INSTITUTION_NAME).is_err());
            assert!(back.element(tags::STATION_NAME).is_err());
            assert!(back.element(OTHER_PATIENT_IDS).is_err());
            let r = back
                .element(tags::REFERENCED_IMAGE_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()[0]
                .element(tags::REFERENCED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .to_string();
            assert_eq!(r, e.remap_uid(ORIG_REF_SOP));
        }
    }

    #[test]
    fn deterministic() {
        let e = test_engine();
        let ts = dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN;
        let a = done(deidentify(sample(ts), &e, false).unwrap());
        let b = done(deidentify(sample(ts), &e, false).unwrap());
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.object().write_all(&mut x).unwrap();
        b.object().write_all(&mut y).unwrap();
        assert_eq!(x, y, "same input must give identical bytes");
        assert_eq!(a.study(), b.study());
    }

    #[test]
    fn burned_in_is_quarantined_unless_released() {
        let e = test_engine();
        let mut obj = sample(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN);
        obj.put(DataElement::new(
            tags::BURNED_IN_ANNOTATION,
            VR::CS,
            PrimitiveValue::from("YES"),
        ));
        let o = deidentify(obj.clone(), &e, false).unwrap();
        assert!(matches!(o, DeidOutcome::Quarantine(_)), "{o:?}");
        done(deidentify(obj, &e, true).unwrap());
    }

    #[test]
    fn missing_uid_fails_closed() {
        let mut obj = sample(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN);
        obj.remove_element(tags::STUDY_INSTANCE_UID);
        assert!(matches!(
            deidentify(obj, &test_engine(), false),
            Err(DeidError::Missing(_))
        ));
    }
}
