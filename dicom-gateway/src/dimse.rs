//! DIMSE command sets (PS3.7 §9, §E): parsing requests and building the
//! C-ECHO / C-STORE responses. Command sets are always Implicit VR Little
//! Endian.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

pub const STATUS_SUCCESS: u16 = 0x0000;
/// Refused: SOP Class not supported.
pub const STATUS_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
/// Error: Cannot understand.
pub const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;
/// Processing failure (PS3.7 C.4.2): C-ECHO when the spool is unusable.
pub const STATUS_PROCESSING_FAILURE: u16 = 0x0110;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command set cannot be parsed: {0}")]
    Parse(String),
    #[error("command set lacks {0}")]
    Missing(&'static str),
    #[error("command response cannot be encoded: {0}")]
    Encode(String),
}

/// The fields of a request command set we use.
#[derive(Debug, Clone)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub affected_sop_class: Option<String>,
    pub affected_sop_instance: Option<String>,
    /// Whether a data set follows the command.
    pub has_data_set: bool,
    /// N-ACTION / N-SET...: Requested SOP Class UID (0000,0003).
    pub requested_sop_class: Option<String>,
    /// N-ACTION: Action Type ID (0000,1008).
    pub action_type_id: Option<u16>,
}

impl Command {
    pub fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        // walked first: nesting and declared lengths are checked before
        // anything is allocated or parsed recursively
        crate::guard::check_command(bytes).map_err(|e| CommandError::Parse(e.to_string()))?;
        let obj =
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .map_err(|e| CommandError::Parse(e.to_string()))?;
        let u16_of = |tag, name| -> Result<u16, CommandError> {
            obj.get(tag)
                .ok_or(CommandError::Missing(name))?
                .uint16()
                .map_err(|_| CommandError::Missing(name))
        };
        let str_of = |tag| {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        };
        let field = u16_of(tags::COMMAND_FIELD, "Command Field")?;
        // a response (e.g. N-EVENT-REPORT-RSP) carries the id it answers
        let message_id = if field & 0x8000 != 0 {
            u16_of(
                tags::MESSAGE_ID_BEING_RESPONDED_TO,
                "Message ID Being Responded To",
            )?
        } else {
            u16_of(tags::MESSAGE_ID, "Message ID")?
        };
        let data_set_type = u16_of(tags::COMMAND_DATA_SET_TYPE, "Command Data Set Type")?;
        Ok(Self {
            field,
            message_id,
            affected_sop_class: str_of(tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance: str_of(tags::AFFECTED_SOP_INSTANCE_UID),
            has_data_set: data_set_type != NO_DATA_SET,
            requested_sop_class: str_of(tags::REQUESTED_SOP_CLASS_UID),
            action_type_id: obj.get(tags::ACTION_TYPE_ID).and_then(|e| e.uint16().ok()),
        })
    }
}

fn encode(obj: InMemDicomObject) -> Result<Vec<u8>, CommandError> {
    let mut out = Vec::with_capacity(160);
    obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| CommandError::Encode(e.to_string()))?;
    Ok(out)
}

fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}
fn ui(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(v))
}

/// C-ECHO-RSP (success) for `message_id`.
pub fn echo_response(message_id: u16) -> Result<Vec<u8>, CommandError> {
    echo_response_status(message_id, STATUS_SUCCESS)
}

/// C-ECHO-RSP with `status` for `message_id`.
pub fn echo_response_status(message_id: u16, status: u16) -> Result<Vec<u8>, CommandError> {
    encode(InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, uids::VERIFICATION),
        us(tags::COMMAND_FIELD, C_ECHO_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
    ]))
}

/// C-STORE-RSP with `status` for `message_id`.
pub fn store_response(
    message_id: u16,
    sop_class: &str,
    sop_instance: &str,
    status: u16,
) -> Result<Vec<u8>, CommandError> {
    encode(InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        us(tags::COMMAND_FIELD, C_STORE_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_roundtrip() {
        let rq = encode(InMemDicomObject::command_from_element_iter([
            ui(tags::AFFECTED_SOP_CLASS_UID, uids::CT_IMAGE_STORAGE),
            us(tags::COMMAND_FIELD, C_STORE_RQ),
            us(tags::MESSAGE_ID, 7),
            us(tags::PRIORITY, 0),
            us(tags::COMMAND_DATA_SET_TYPE, 0x0000),
            ui(tags::AFFECTED_SOP_INSTANCE_UID, "1.2.3"),
        ]))
        .unwrap();
        let c = Command::parse(&rq).unwrap();
        assert_eq!(c.field, C_STORE_RQ);
        assert_eq!(c.message_id, 7);
        assert!(c.has_data_set);
        assert_eq!(
            c.affected_sop_class.as_deref(),
            Some(uids::CT_IMAGE_STORAGE)
        );
        assert_eq!(c.affected_sop_instance.as_deref(), Some("1.2.3"));
        // the response carries a correct command group length
        let rsp = store_response(7, uids::CT_IMAGE_STORAGE, "1.2.3", 0).unwrap();
        let obj = InMemDicomObject::read_dataset_with_ts(
            rsp.as_slice(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let len = obj
            .get(tags::COMMAND_GROUP_LENGTH)
            .unwrap()
            .to_int::<u32>()
            .unwrap();
        assert_eq!(len as usize, rsp.len() - 12);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Command::parse(b"\x00\x00\x00\x00\xff\xff\xff\xff").is_err());
        assert!(Command::parse(b"").is_err());
    }
}
