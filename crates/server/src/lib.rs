//! The FHIR server: interactions ([`service`], [`bundle`]), who may call them ([`auth`]),
//! and their HTTP face ([`http`], [`serve`]). Knows nothing of on-disk formats.
//!
//! Architecture invariants:
//! - Every route except `GET /fhir/metadata` and `GET /health` authenticates a bearer
//!   token and, for clinical data, requires a [`auth::ClinicalAccess`].
//! - Errors become `OperationOutcome`s in one place ([`http::error_response`]).

pub mod accounts;
pub mod admin;
pub mod alert_sink;
pub mod audit;
pub mod audit_search;
pub mod auth;
pub mod bundle;
pub mod capability;
pub mod error;
pub mod http;
pub mod json;
pub mod ledger;
pub mod login;
pub mod search;
pub mod serve;
pub mod service;

pub use error::ApiError;
pub use service::Service;
