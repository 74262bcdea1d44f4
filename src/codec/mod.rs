//! Codecs: bytes ⇄ core types. Input records (JSON, Protobuf) decode and
//! validate into [`crate::core::Event`]; signals encode to JSON or
//! Protobuf; account state encodes to Protobuf for snapshots.
//!
//! Depends on the core only.

pub mod json;
pub mod output;
pub mod proto;
pub mod raw;
pub mod state;
pub mod timefmt;

/// Generated Protobuf types (`proto/vitals/v1/*.proto`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/vitals.v1.rs"));
}

pub use raw::DecodeError;

/// Largest record accepted (SPEC §1: oversize records are invalid).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Input encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Protobuf,
}

/// Decodes one record in `format` into a validated event.
pub fn decode(format: Format, bytes: &[u8]) -> Result<crate::core::Event<'static>, DecodeError> {
    match format {
        Format::Json => json::decode(bytes).map(|e| e.into_owned()),
        Format::Protobuf => proto::decode(bytes),
    }
}
