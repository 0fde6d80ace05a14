//! FHIR R4 (4.0.1) resource rules: what a valid resource is, which patient it belongs to,
//! and the shapes of `OperationOutcome`. Knows nothing of storage, keys or HTTP.
//!
//! The rules are generated from the official HL7 definitions (CC0), see `model/README.md`.

pub mod compartment;
pub mod outcome;
pub mod search;
pub mod summary;
pub mod validate;

mod format;
mod model;

pub use compartment::{care_relationships, parse_relative_reference, patient_compartment_owner};
pub use validate::{
    is_resource_type, is_valid_id, resource_types, validate_resource, IssueKind, ValidationError, ValidationIssue,
};
