//! The ledger over HTTP (`docs/format/checkpoint.md`): the latest signed checkpoint, the
//! log's verifier key, and inclusion and consistency proofs. Every route authenticates;
//! inclusion proofs name a resource, so they need clinical access.

use medvault_store::Store;

use crate::auth::Principal;
use crate::error::ApiError;

/// The latest signed checkpoint (a C2SP signed note), or the one of `tree_size`.
pub fn checkpoint(store: &Store, _principal: &Principal, tree_size: Option<u64>) -> Result<String, ApiError> {
    let row = match tree_size {
        None => store.latest_checkpoint()?,
        Some(size) => store.checkpoint_at(size)?,
    };
    row.map(|row| row.note)
        .ok_or_else(|| ApiError::not_found("no signed checkpoint of that size (the log may be empty)"))
}

pub fn verifier_key(store: &Store, _principal: &Principal) -> Result<String, ApiError> {
    Ok(store.ledger_verifier()?.to_string())
}

/// `resource` is `Type/id/_history/version`.
pub fn inclusion(
    store: &Store,
    access: &crate::auth::ClinicalAccess,
    resource: &str,
    tree_size: Option<u64>,
) -> Result<serde_json::Value, ApiError> {
    let parts: Vec<&str> = resource.split('/').collect();
    let [resource_type, id, "_history", version] = parts.as_slice() else {
        return Err(ApiError::bad_request("resource must be Type/id/_history/version"));
    };
    crate::service::check_type_and_id(resource_type, id)?;
    let version: u64 = version.parse().map_err(|_| ApiError::bad_request("the version must be a positive integer"))?;
    // A proof says that a version exists: only for callers who may read it.
    match store.vread(resource_type, id, version)? {
        Some(stored) => access.check_version(&stored, medvault_auth::scope::Interaction::Read)?,
        None if access.sees_all_patients() => {}
        None => return Err(crate::auth::denied()),
    }
    let proof = store
        .inclusion_proof(resource_type, id, version, tree_size)?
        .ok_or_else(|| ApiError::not_found(format!("{resource} does not exist")))?;
    Ok(proof.to_document(resource))
}

pub fn consistency(
    store: &Store,
    _principal: &Principal,
    old_size: u64,
    new_size: Option<u64>,
) -> Result<serde_json::Value, ApiError> {
    Ok(store.consistency_document(old_size, new_size)?)
}
