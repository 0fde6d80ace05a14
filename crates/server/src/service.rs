//! The FHIR interactions, independent of HTTP: the router and the `import` command both
//! call these. Every method that touches clinical data takes a [`ClinicalAccess`].

use std::sync::Arc;

use medvault_fhir::outcome::Issue;
use medvault_store::engine::HistoryPage;
use medvault_store::{History, Store, StoredVersion, Write, WriteAction, Written};
use serde_json::Value;

use crate::auth::ClinicalAccess;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<Store>,
}

impl Service {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The current version; 404 if it never existed, 410 if it is deleted.
    pub fn read(&self, _access: &ClinicalAccess, resource_type: &str, id: &str) -> Result<StoredVersion, ApiError> {
        check_type_and_id(resource_type, id)?;
        match self.store.read(resource_type, id)? {
            None => Err(ApiError::not_found(format!("{resource_type}/{id} does not exist"))),
            Some(version) if version.deleted => Err(ApiError::new(
                410,
                "deleted",
                format!("{resource_type}/{id} was deleted (version {})", version.version),
            )),
            Some(version) => Ok(version),
        }
    }

    pub fn vread(
        &self,
        _access: &ClinicalAccess,
        resource_type: &str,
        id: &str,
        version: &str,
    ) -> Result<StoredVersion, ApiError> {
        check_type_and_id(resource_type, id)?;
        let number: u64 =
            version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                ApiError::bad_request(format!("'{version}' is not a version id (a positive integer)"))
            })?;
        match self.store.vread(resource_type, id, number)? {
            None => Err(ApiError::not_found(format!("{resource_type}/{id} has no version {number}"))),
            Some(stored) if stored.deleted => {
                Err(ApiError::new(410, "deleted", format!("version {number} of {resource_type}/{id} is a deletion")))
            }
            Some(stored) => Ok(stored),
        }
    }

    /// Create with a server-assigned id.
    pub fn create(&self, access: &ClinicalAccess, resource_type: &str, resource: Value) -> Result<Written, ApiError> {
        check_type(resource_type)?;
        validate(&resource, resource_type)?;
        let id = medvault_crypto::random::uuid_v4().map_err(|e| ApiError::internal(e.to_string()))?;
        let write = Write {
            resource_type: resource_type.to_string(),
            id,
            action: WriteAction::Put(resource),
            if_match: None,
            must_be_new: true,
        };
        Ok(self.store.write(std::slice::from_ref(&write), &access.principal().client)?.remove(0))
    }

    /// Update, or create with the client's id.
    pub fn update(
        &self,
        access: &ClinicalAccess,
        resource_type: &str,
        id: &str,
        resource: Value,
        if_match: Option<u64>,
    ) -> Result<Written, ApiError> {
        check_type_and_id(resource_type, id)?;
        validate(&resource, resource_type)?;
        match resource.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == id => {}
            Some(body_id) => {
                return Err(ApiError::bad_request(format!(
                    "the body's id '{body_id}' differs from the URL's id '{id}'"
                )))
            }
            None => return Err(ApiError::bad_request("an update must carry the resource's id in the body")),
        }
        let write = Write {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            action: WriteAction::Put(resource),
            if_match,
            must_be_new: false,
        };
        Ok(self.store.write(std::slice::from_ref(&write), &access.principal().client)?.remove(0))
    }

    pub fn delete(
        &self,
        access: &ClinicalAccess,
        resource_type: &str,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<Written, ApiError> {
        check_type_and_id(resource_type, id)?;
        let write = Write {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            action: WriteAction::Delete,
            if_match,
            must_be_new: false,
        };
        let written = self.store.write(std::slice::from_ref(&write), &access.principal().client)?.remove(0);
        if written.noop && written.version == 0 {
            return Err(ApiError::not_found(format!("{resource_type}/{id} does not exist")));
        }
        Ok(written)
    }

    pub fn history(
        &self,
        _access: &ClinicalAccess,
        scope: &History,
        page: HistoryPage,
    ) -> Result<Vec<StoredVersion>, ApiError> {
        match scope {
            History::System => {}
            History::Type(resource_type) => check_type(resource_type)?,
            History::Instance { resource_type, id } => {
                check_type_and_id(resource_type, id)?;
                if self.store.read(resource_type, id)?.is_none() {
                    return Err(ApiError::not_found(format!("{resource_type}/{id} does not exist")));
                }
            }
        }
        Ok(self.store.history(scope, page)?)
    }
}

pub fn check_type(resource_type: &str) -> Result<(), ApiError> {
    if medvault_fhir::is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("'{resource_type}' is not a FHIR R4 resource type this server supports")))
    }
}

pub fn check_type_and_id(resource_type: &str, id: &str) -> Result<(), ApiError> {
    check_type(resource_type)?;
    if medvault_fhir::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request("the id is not a valid FHIR id (1 to 64 of A-Z a-z 0-9 - .)"))
    }
}

/// Checks that `resource` is a valid `resource_type` per the R4 definitions.
pub fn validate(resource: &Value, resource_type: &str) -> Result<(), ApiError> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(found) if found == resource_type => {}
        Some(found) => {
            return Err(ApiError::bad_request(format!("the body is a {found} but the request is for {resource_type}")))
        }
        None => return Err(ApiError::new(400, "structure", "the body has no resourceType; it is not a FHIR resource")),
    }
    medvault_fhir::validate_resource(resource).map_err(|error| {
        let issues = error
            .issues
            .iter()
            .map(|issue| {
                let code = match issue.kind {
                    medvault_fhir::IssueKind::Structure => "structure",
                    medvault_fhir::IssueKind::Required => "required",
                    medvault_fhir::IssueKind::Value => "value",
                    medvault_fhir::IssueKind::CodeInvalid => "code-invalid",
                    medvault_fhir::IssueKind::TooLong => "too-long",
                };
                Issue::error(code, format!("{}: {}", issue.path, issue.message)).at(issue.path.clone())
            })
            .collect();
        ApiError::with_issues(400, issues)
    })
}
