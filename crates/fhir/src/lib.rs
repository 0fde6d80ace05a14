//! FHIR R4 (4.0.1) resource rules: what a valid resource is, which patient it belongs to,
//! and the shapes of `OperationOutcome`. Knows nothing of storage, keys or HTTP.
//!
//! The rules are generated from the official HL7 definitions (CC0), see `model/README.md`.

pub mod outcome;

mod interim;
pub use interim::*;
