//! Who is calling, and which records they may touch.
//!
//! Authentication turns a bearer token into a [`Principal`]: a login session (`mvs_…`,
//! made by password and second factor, see [`crate::login`]) or a service client's
//! access token (`mvt_…`). Authorization then makes a [`ClinicalAccess`], the only value
//! the clinical interactions of [`crate::service`] accept. It answers two questions for
//! every record an interaction reads or writes:
//!
//! - do the caller's SMART scopes allow this interaction on this resource type?
//! - is the record's patient one the caller may see? A service client with `system/`
//!   scopes sees every patient; a patient sees their own record; a clinician sees the
//!   patients they have a care relationship with (a CareTeam or Encounter naming their
//!   Practitioner, an explicit assignment, or an unexpired break-glass grant).
//!
//! Whose record a stored version is comes from the key that seals it
//! ([`medvault_store::StoredVersion::compartment`]), so the answer cannot drift from
//! what the crypto-shredding of a patient would erase.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use medvault_auth::scope::{Interaction, ScopeContext, ScopeSet};
use medvault_base::limits::CARE_CACHE_ENTRIES_MAX;
use medvault_store::accounts::CareRelationship;
use medvault_store::sqlite::ChangeMarker;
use medvault_store::{Store, StoredVersion};

use crate::error::ApiError;

/// The roles of accounts and clients. An administrator is not a reader of clinical data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Administrator,
    Clinician,
    Service,
    Auditor,
    Patient,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Administrator, Role::Clinician, Role::Service, Role::Auditor, Role::Patient];
    /// Roles of people (service clients have tokens, not accounts).
    pub const USERS: [Role; 4] = [Role::Administrator, Role::Clinician, Role::Auditor, Role::Patient];

    pub fn name(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Clinician => "clinician",
            Role::Service => "service",
            Role::Auditor => "auditor",
            Role::Patient => "patient",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }

    pub fn reads_clinical_data(self) -> bool {
        matches!(self, Role::Clinician | Role::Service | Role::Patient)
    }

    /// The SMART scope context this role's scopes are written in.
    pub fn scope_context(self) -> ScopeContext {
        match self {
            Role::Service => ScopeContext::System,
            Role::Patient => ScopeContext::Patient,
            _ => ScopeContext::User,
        }
    }

    /// Scopes granted when an account is created without explicit ones.
    pub fn default_scopes(self) -> &'static str {
        match self {
            Role::Clinician => "user/*.cruds",
            Role::Patient => "patient/*.rs",
            Role::Administrator | Role::Auditor | Role::Service => "",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user name or service client name; the ledger records it as a write's author.
    pub client: String,
    pub role: Role,
    /// The account, for people; `None` for service clients and the local operator.
    pub user_id: Option<i64>,
    /// `(type, id)` of the FHIR resource the user is: a Practitioner or a Patient.
    pub fhir_user: Option<(String, String)>,
    pub scopes: Arc<ScopeSet>,
    /// The keyed token of the Practitioner a clinician is (care relationships name it).
    pub practitioner_token: Option<[u8; 32]>,
    /// The digest of the session token, for logout.
    pub session: Option<[u8; 32]>,
    /// The store's change marker when this caller was authenticated
    /// ([`Store::change_marker`]): cached answers made at the same marker are current.
    pub marker: Option<ChangeMarker>,
}

impl Principal {
    pub fn is(&self, role: Role) -> bool {
        self.role == role
    }
}

/// Care relationships looked up by earlier requests, by (user, patient compartment), with
/// the store's change marker they were read at. An answer is reused only while the marker
/// is unchanged, i.e. nothing at all was committed since: a new CareTeam, an unassignment
/// or a grant (from this process or the command line) is seen by the next request.
#[derive(Debug, Default)]
pub struct CareCache {
    entries: RwLock<HashMap<CareKey, (ChangeMarker, CareRelationship)>>,
}

/// (user id, patient compartment token).
type CareKey = (i64, [u8; 32]);

impl CareCache {
    fn get(&self, key: &CareKey, marker: ChangeMarker) -> Option<CareRelationship> {
        let entries = self.entries.read().ok()?;
        entries.get(key).filter(|(at, _)| *at == marker).map(|(_, relationship)| *relationship)
    }

    fn put(&self, key: CareKey, marker: ChangeMarker, relationship: CareRelationship) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= CARE_CACHE_ENTRIES_MAX {
                entries.clear();
            }
            entries.insert(key, (marker, relationship));
        }
    }
}

/// Which patients' records a caller may see.
#[derive(Debug, Clone)]
enum Patients {
    /// Service clients with `system/` scopes, and the operator at the console.
    All,
    /// A patient: their own compartment only.
    Own([u8; 32]),
    /// A clinician: patients they have a care relationship with.
    CareOf { user_id: i64, practitioner: Option<[u8; 32]> },
    /// Nobody's (a patient account without a linked Patient resource).
    None,
}

/// Proof that the caller may use the clinical interactions, and the rules that then
/// decide record by record. Only [`authorize_clinical`] and
/// [`ClinicalAccess::local_operator`] make one.
#[derive(Debug)]
pub struct ClinicalAccess {
    principal: Principal,
    patients: Patients,
    store: Option<Arc<Store>>,
    care_cache: Option<Arc<CareCache>>,
    /// Answers already looked up in this request, and patients it registers.
    seen: Mutex<HashMap<[u8; 32], bool>>,
    /// What this request read, for its audit record: (record, its patient's id).
    touched: Mutex<Vec<(String, Option<String>)>>,
    /// A break-glass grant opened one of the records this request saw.
    used_break_glass: std::sync::atomic::AtomicBool,
    /// The request, for the audit records of its writes.
    request: RequestInfo,
    /// The interaction, when the handler learns it from the body (transaction or batch).
    kind: Mutex<Option<medvault_audit::EventKind>>,
    /// The audit records this request's writes carried, for the alert rules.
    written: Mutex<Vec<medvault_audit::AuditRecord>>,
}

/// What the audit trail needs to know of the request an access belongs to.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub request_id: String,
    pub address: Option<String>,
}

/// The answer to every denied record: the same whether the record exists or not.
pub fn denied() -> ApiError {
    ApiError::forbidden("you are not permitted to access this resource, or it does not exist")
}

impl ClinicalAccess {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The operator at the console (import from the command line): whoever can open the
    /// store's master key already holds every record.
    pub fn local_operator(name: &str) -> Self {
        Self {
            principal: Principal {
                client: format!("local:{name}"),
                role: Role::Service,
                user_id: None,
                fhir_user: None,
                scopes: all_system_scopes(),
                practitioner_token: None,
                session: None,
                marker: None,
            },
            patients: Patients::All,
            store: None,
            care_cache: None,
            seen: Mutex::new(HashMap::new()),
            touched: Mutex::new(Vec::new()),
            used_break_glass: std::sync::atomic::AtomicBool::new(false),
            request: RequestInfo { request_id: format!("local:{name}"), address: None },
            kind: Mutex::new(None),
            written: Mutex::new(Vec::new()),
        }
    }

    /// Keeps the audit records of this request's writes for the alert rules.
    pub fn note_written(&self, records: &[medvault_audit::AuditRecord]) {
        if let Ok(mut written) = self.written.lock() {
            written.extend_from_slice(records);
        }
    }

    pub fn take_written(&self) -> Vec<medvault_audit::AuditRecord> {
        self.written.lock().map(|mut written| std::mem::take(&mut *written)).unwrap_or_default()
    }

    /// Names the interaction for the audit record (a Bundle is a transaction or a batch).
    pub fn set_kind(&self, kind: medvault_audit::EventKind) {
        if let Ok(mut slot) = self.kind.lock() {
            *slot = Some(kind);
        }
    }

    pub fn kind_override(&self) -> Option<medvault_audit::EventKind> {
        self.kind.lock().ok().and_then(|slot| *slot)
    }

    pub fn request(&self) -> &RequestInfo {
        &self.request
    }

    /// Notes that this request read `record` (`Type/id/_history/v`) of `patient`.
    pub fn touch(&self, record: String, patient: Option<String>) {
        if let Ok(mut touched) = self.touched.lock() {
            if touched.len() < medvault_audit::record::AUDIT_ENTITIES_MAX {
                touched.push((record, patient));
            }
        }
    }

    /// What this request read, and whether break-glass opened any of it.
    pub fn touched(&self) -> (Vec<(String, Option<String>)>, bool) {
        let touched = self.touched.lock().map(|t| t.clone()).unwrap_or_default();
        (touched, self.used_break_glass.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Every patient is visible: a missing record may be reported as missing.
    pub fn sees_all_patients(&self) -> bool {
        matches!(self.patients, Patients::All)
    }

    /// The user to assign to patients this caller registers (clinicians only).
    pub fn registrar(&self) -> Option<i64> {
        match self.patients {
            Patients::CareOf { user_id, .. } => Some(user_id),
            _ => None,
        }
    }

    /// Do the scopes allow `interaction` on `resource_type`? (403 if not.)
    pub fn check_scope(&self, resource_type: &str, interaction: Interaction) -> Result<(), ApiError> {
        if self.allows(resource_type, interaction) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the granted scopes do not allow {} on {resource_type}",
                interaction_name(interaction)
            )))
        }
    }

    pub fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        let scopes = &self.principal.scopes;
        match self.principal.role {
            // A patient's `user/` scopes mean the same as `patient/`: their own record.
            Role::Patient => {
                scopes.allows(ScopeContext::Patient, resource_type, interaction)
                    || scopes.allows(ScopeContext::User, resource_type, interaction)
            }
            role => scopes.allows(role.scope_context(), resource_type, interaction),
        }
    }

    /// May the caller see records of `compartment` (`None`: shared data, not a patient's)?
    pub fn sees(&self, compartment: Option<&[u8; 32]>) -> Result<bool, ApiError> {
        let Some(compartment) = compartment else { return Ok(true) };
        match &self.patients {
            Patients::All => Ok(true),
            Patients::None => Ok(false),
            Patients::Own(own) => Ok(medvault_crypto::constant_time_eq(own, compartment)),
            Patients::CareOf { user_id, practitioner } => {
                if let Some(known) = self.seen.lock().map_err(|_| ApiError::internal("poisoned"))?.get(compartment) {
                    return Ok(*known);
                }
                let store = self.store.as_ref().ok_or_else(|| ApiError::internal("access without a store"))?;
                let now_ms = store.clock().now_ms();
                let key = (*user_id, *compartment);
                let cached = match (&self.care_cache, self.principal.marker) {
                    (Some(cache), Some(marker)) => cache.get(&key, marker),
                    _ => None,
                };
                let relationship = match cached {
                    Some(relationship) => relationship,
                    None => {
                        let relationship =
                            store.care_relationship(*user_id, practitioner.as_ref(), compartment, now_ms)?;
                        if let (Some(cache), Some(marker)) = (&self.care_cache, self.principal.marker) {
                            cache.put(key, marker, relationship);
                        }
                        relationship
                    }
                };
                let answer = match relationship {
                    CareRelationship::None => false,
                    CareRelationship::Lasting => true,
                    CareRelationship::Until(expires_ms) => {
                        let open = now_ms < expires_ms;
                        if open {
                            self.used_break_glass.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        open
                    }
                };
                self.seen.lock().map_err(|_| ApiError::internal("poisoned"))?.insert(*compartment, answer);
                Ok(answer)
            }
        }
    }

    /// A version the caller may be shown: scope for `interaction` on its type, and its patient.
    pub fn check_version(&self, version: &StoredVersion, interaction: Interaction) -> Result<(), ApiError> {
        if !self.allows(&version.resource_type, interaction) || !self.sees(version.compartment.as_ref())? {
            return Err(denied());
        }
        Ok(())
    }

    /// Forgets what this request looked up and registered (between independent batch entries).
    pub fn forget(&self) -> Result<(), ApiError> {
        self.seen.lock().map_err(|_| ApiError::internal("poisoned"))?.clear();
        Ok(())
    }

    /// Lets this request write into the compartment of a patient it is registering.
    pub fn register_patient(&self, compartment: [u8; 32]) -> Result<(), ApiError> {
        self.seen.lock().map_err(|_| ApiError::internal("poisoned"))?.insert(compartment, true);
        Ok(())
    }
}

fn interaction_name(interaction: Interaction) -> &'static str {
    match interaction {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}

/// Makes the [`ClinicalAccess`] of a principal whose role reads clinical data.
pub fn authorize_clinical(
    store: &Arc<Store>,
    care_cache: &Arc<CareCache>,
    principal: &Principal,
    request: RequestInfo,
) -> Result<ClinicalAccess, ApiError> {
    if !principal.role.reads_clinical_data() {
        return Err(ApiError::forbidden(format!(
            "the {} role does not give access to clinical data",
            principal.role.name()
        )));
    }
    let patients = match principal.role {
        Role::Service => Patients::All,
        Role::Patient => match &principal.fhir_user {
            Some((resource_type, id)) if resource_type == "Patient" => Patients::Own(store.compartment_token(id)),
            _ => Patients::None,
        },
        _ => Patients::CareOf {
            user_id: principal.user_id.ok_or_else(|| ApiError::internal("a clinician without an account"))?,
            practitioner: principal.practitioner_token,
        },
    };
    Ok(ClinicalAccess {
        principal: principal.clone(),
        patients,
        store: Some(store.clone()),
        care_cache: Some(care_cache.clone()),
        seen: Mutex::new(HashMap::new()),
        touched: Mutex::new(Vec::new()),
        used_break_glass: std::sync::atomic::AtomicBool::new(false),
        request,
        kind: Mutex::new(None),
        written: Mutex::new(Vec::new()),
    })
}

/// `system/*.cruds`, parsed once.
fn all_system_scopes() -> Arc<ScopeSet> {
    static SCOPES: std::sync::OnceLock<Arc<ScopeSet>> = std::sync::OnceLock::new();
    SCOPES.get_or_init(|| Arc::new(ScopeSet::parse("system/*.cruds").unwrap_or_default())).clone()
}

/// A benchmark-only access that skips session checks and authorization, so the cost of
/// both can be measured (`medvault-bench`). Reached only through
/// `AppState::danger_without_authorization_for_benchmark`, which exists only with the
/// `danger-benchmark-unchecked` feature.
pub fn danger_unchecked_access() -> ClinicalAccess {
    ClinicalAccess::local_operator("danger-benchmark-unchecked")
}
