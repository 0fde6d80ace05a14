//! The FHIR interactions, independent of HTTP: the router and the `import` command both
//! call these. Every method that touches clinical data takes a [`ClinicalAccess`].

use std::sync::Arc;

use medvault_auth::scope::Interaction;
use medvault_base::limits::HISTORY_SCAN_ROWS_MAX;
use medvault_fhir::outcome::Issue;
use medvault_store::engine::HistoryPage;
use medvault_store::{History, Store, StoredVersion, Write, WriteAction, Written};
use serde_json::Value;

use medvault_audit::EventKind;
use medvault_store::AuditEntry;

use crate::audit::{patient_of, write_record};
use crate::auth::{denied, ClinicalAccess};
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<Store>,
    /// Patient ids by compartment token, so that a read's audit record can name its
    /// patient without parsing the record (bounded; refilled from the records).
    patient_ids: Arc<std::sync::RwLock<std::collections::HashMap<[u8; 32], String>>>,
}

/// Patient ids remembered for audit records.
const PATIENT_IDS_CACHED: usize = 200_000;

impl Service {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, patient_ids: Arc::default() }
    }

    /// Notes a version the request read, for its audit record.
    fn touch(&self, access: &ClinicalAccess, version: &StoredVersion) {
        let patient = version.compartment.as_ref().and_then(|token| {
            if let Some(id) = self.patient_ids.read().ok().and_then(|ids| ids.get(token).cloned()) {
                return Some(id);
            }
            let id = patient_of(&version.resource_type, &version.id, &version.json, Some(token))?;
            if let Ok(mut ids) = self.patient_ids.write() {
                if ids.len() >= PATIENT_IDS_CACHED {
                    ids.clear();
                }
                ids.insert(*token, id.clone());
            }
            Some(id)
        });
        access.touch(format!("{}/{}/_history/{}", version.resource_type, version.id, version.version), patient);
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The current version; 404 if it never existed, 410 if it is deleted. A record the
    /// caller may not see is 403, exactly as one that does not exist is for them.
    pub fn read(&self, access: &ClinicalAccess, resource_type: &str, id: &str) -> Result<StoredVersion, ApiError> {
        check_type_and_id(resource_type, id)?;
        access.check_scope(resource_type, Interaction::Read)?;
        match self.store.read(resource_type, id)? {
            None => Err(missing(access, format!("{resource_type}/{id} does not exist"))),
            Some(version) if !access.sees(version.compartment.as_ref())? => Err(denied()),
            Some(version) if version.deleted => {
                self.touch(access, &version);
                Err(ApiError::new(
                    410,
                    "deleted",
                    format!("{resource_type}/{id} was deleted (version {})", version.version),
                ))
            }
            Some(version) => {
                self.touch(access, &version);
                Ok(version)
            }
        }
    }

    pub fn vread(
        &self,
        access: &ClinicalAccess,
        resource_type: &str,
        id: &str,
        version: &str,
    ) -> Result<StoredVersion, ApiError> {
        check_type_and_id(resource_type, id)?;
        let number: u64 =
            version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                ApiError::bad_request(format!("'{version}' is not a version id (a positive integer)"))
            })?;
        access.check_scope(resource_type, Interaction::Read)?;
        match self.store.vread(resource_type, id, number)? {
            None => Err(missing(access, format!("{resource_type}/{id} has no version {number}"))),
            Some(stored) if !access.sees(stored.compartment.as_ref())? => Err(denied()),
            Some(stored) if stored.deleted => {
                self.touch(access, &stored);
                Err(ApiError::new(410, "deleted", format!("version {number} of {resource_type}/{id} is a deletion")))
            }
            Some(stored) => {
                self.touch(access, &stored);
                Ok(stored)
            }
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
        self.write_one(access, write)
    }

    /// Authorizes and commits one write.
    fn write_one(&self, access: &ClinicalAccess, write: Write) -> Result<Written, ApiError> {
        let writes = std::slice::from_ref(&write);
        let kinds = self.authorize_writes(access, writes).map_err(|(_, error)| error)?;
        let audit = self.write_audit(access, writes, &kinds)?;
        Ok(self.store.write_audited(writes, &access.principal().client, access.registrar(), &audit)?.remove(0))
    }

    /// The audit records of writes (one each), to commit with them.
    pub fn write_audit(
        &self,
        access: &ClinicalAccess,
        writes: &[Write],
        kinds: &[EventKind],
    ) -> Result<Vec<AuditEntry>, ApiError> {
        let now_ms = self.store.clock().now_ms();
        let mut records = Vec::with_capacity(writes.len());
        for (write, kind) in writes.iter().zip(kinds) {
            let patients = match &write.action {
                WriteAction::Put(body) => {
                    let owner = if write.resource_type == "Patient" {
                        Some(write.id.clone())
                    } else {
                        medvault_fhir::patient_compartment_owner(body)
                    };
                    owner.into_iter().collect()
                }
                WriteAction::Delete => match self.store.read(&write.resource_type, &write.id)? {
                    Some(current) => {
                        patient_of(&current.resource_type, &current.id, &current.json, current.compartment.as_ref())
                            .into_iter()
                            .collect()
                    }
                    None => Vec::new(),
                },
            };
            let entity = format!("{}/{}", write.resource_type, write.id);
            records.push(write_record(access, *kind, entity, patients, now_ms));
        }
        access.note_written(&records);
        crate::audit::entries(records)
    }

    /// Checks every write of a request before any is made: the scopes allow it, the
    /// record's patient as stored (for updates and deletes) and as written are ones the
    /// caller may see. A clinician may register a new patient (a Patient id never used)
    /// and write into that patient's record in the same request; the store then assigns
    /// them to the patient. Errors name the write's index.
    pub fn authorize_writes(
        &self,
        access: &ClinicalAccess,
        writes: &[Write],
    ) -> Result<Vec<EventKind>, (usize, ApiError)> {
        let at = |index: usize| move |error: ApiError| (index, error);
        let mut current = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            let stored = if write.must_be_new {
                None
            } else {
                self.store.current_compartment(&write.resource_type, &write.id).map_err(|e| (index, e.into()))?
            };
            if let (None, WriteAction::Put(_), Some(_), "Patient") =
                (stored, &write.action, access.registrar(), write.resource_type.as_str())
            {
                let compartment = self.store.compartment_token(&write.id);
                access.check_scope("Patient", Interaction::Create).map_err(at(index))?;
                access.register_patient(compartment).map_err(at(index))?;
            }
            current.push(stored);
        }
        let mut kinds = Vec::with_capacity(writes.len());
        for (index, (write, stored)) in writes.iter().zip(current).enumerate() {
            let interaction = match (&write.action, stored) {
                (WriteAction::Delete, _) => Interaction::Delete,
                (WriteAction::Put(_), None) => Interaction::Create,
                (WriteAction::Put(_), Some(_)) => Interaction::Update,
            };
            kinds.push(match interaction {
                Interaction::Delete => EventKind::Delete,
                Interaction::Create => EventKind::Create,
                _ => EventKind::Update,
            });
            access.check_scope(&write.resource_type, interaction).map_err(at(index))?;
            match stored {
                Some(compartment) if !access.sees(compartment.as_ref()).map_err(at(index))? => {
                    return Err((index, denied()))
                }
                None if matches!(write.action, WriteAction::Delete) && !access.sees_all_patients() => {
                    return Err((index, denied()))
                }
                _ => {}
            }
            if let WriteAction::Put(resource) = &write.action {
                let compartment = self.store.compartment_of(&write.resource_type, &write.id, resource);
                if !access.sees(compartment.as_ref()).map_err(at(index))? {
                    return Err((index, denied()));
                }
            }
        }
        Ok(kinds)
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
        self.write_one(access, write)
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
        let written = self.write_one(access, write)?;
        if written.noop && written.version == 0 {
            return Err(ApiError::not_found(format!("{resource_type}/{id} does not exist")));
        }
        Ok(written)
    }

    /// A page of history with only the versions the caller may see. Type and system
    /// history are searches (scope `s`), instance history a read (`r`). When versions are
    /// filtered out, more are scanned (at most `HISTORY_SCAN_ROWS_MAX` rows per page) so
    /// the page fills; `next_before` is where the next page starts.
    pub fn history(
        &self,
        access: &ClinicalAccess,
        scope: &History,
        page: HistoryPage,
    ) -> Result<HistoryResult, ApiError> {
        let interaction = match scope {
            History::System => Interaction::Search,
            History::Type(resource_type) => {
                check_type(resource_type)?;
                access.check_scope(resource_type, Interaction::Search)?;
                Interaction::Search
            }
            History::Instance { resource_type, id } => {
                check_type_and_id(resource_type, id)?;
                access.check_scope(resource_type, Interaction::Read)?;
                match self.store.current_compartment(resource_type, id)? {
                    None => return Err(missing(access, format!("{resource_type}/{id} does not exist"))),
                    Some(compartment) if !access.sees(compartment.as_ref())? => return Err(denied()),
                    Some(_) => {}
                }
                Interaction::Read
            }
        };
        let wanted = usize::try_from(page.count).unwrap_or(usize::MAX);
        let mut versions = Vec::with_capacity(wanted);
        let mut cursor = page;
        let mut scanned = 0usize;
        loop {
            let batch = self.store.history(scope, cursor)?;
            let exhausted = batch.len() < usize::try_from(cursor.count).unwrap_or(usize::MAX);
            for version in batch {
                scanned += 1;
                cursor.before_seq = Some(version.seq);
                if access.allows(&version.resource_type, interaction) && access.sees(version.compartment.as_ref())? {
                    self.touch(access, &version);
                    versions.push(version);
                    if versions.len() == wanted {
                        return Ok(HistoryResult { versions, next_before: cursor.before_seq });
                    }
                }
            }
            if exhausted {
                return Ok(HistoryResult { versions, next_before: None });
            }
            if scanned >= HISTORY_SCAN_ROWS_MAX {
                return Ok(HistoryResult { versions, next_before: cursor.before_seq });
            }
        }
    }
}

/// A filtered page of history.
#[derive(Debug)]
pub struct HistoryResult {
    pub versions: Vec<StoredVersion>,
    /// The cursor of the next page, if there may be one.
    pub next_before: Option<i64>,
}

/// "Does not exist" for a caller who sees every patient; for others the same 403 as a
/// record they may not see, so a miss reveals nothing.
fn missing(access: &ClinicalAccess, diagnostics: String) -> ApiError {
    if access.sees_all_patients() {
        ApiError::not_found(diagnostics)
    } else {
        denied()
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
