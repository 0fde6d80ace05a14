//! `transaction` and `batch` Bundles (FHIR R4 §3.1.0.11), and the response Bundles they
//! produce. A transaction commits every entry or none; a batch treats each entry alone.

use std::collections::HashMap;

use medvault_base::limits::BUNDLE_ENTRIES_MAX;
use medvault_fhir::outcome::operation_outcome;
use medvault_store::{StoredVersion, Write, WriteAction, WriteError, Written};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::auth::ClinicalAccess;
use crate::error::ApiError;
use crate::service::{check_type, check_type_and_id, validate, Service};

/// What the client asked to get back (`Prefer: return=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnPreference {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// A Bundle as served: resources are spliced in as the exact bytes that were stored.
#[derive(Debug, Serialize)]
pub struct ResponseBundle {
    #[serde(rename = "resourceType")]
    pub resource_type: &'static str,
    pub id: String,
    pub meta: BundleMeta,
    #[serde(rename = "type")]
    pub bundle_type: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<BundleLink>,
    pub entry: Vec<ResponseEntry>,
}

#[derive(Debug, Serialize)]
pub struct BundleMeta {
    #[serde(rename = "lastUpdated")]
    pub last_updated: String,
}

#[derive(Debug, Serialize)]
pub struct BundleLink {
    pub relation: &'static str,
    pub url: String,
}

#[derive(Debug, Serialize, Default)]
pub struct ResponseEntry {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<EntryRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<EntryResponse>,
}

#[derive(Debug, Serialize)]
pub struct EntryRequest {
    pub method: &'static str,
    pub url: String,
}

#[derive(Debug, Serialize, Default)]
pub struct EntryResponse {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "lastModified", skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    /// The ledger receipt of a write (leaf index, checkpoint size).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Value>,
}

/// Extension URLs of the ledger receipt on a Bundle entry's response.
pub const LEAF_INDEX_EXTENSION: &str = "urn:medvault:ledger:leaf-index";
pub const CHECKPOINT_SIZE_EXTENSION: &str = "urn:medvault:ledger:checkpoint-size";

impl ResponseBundle {
    pub fn new(bundle_type: &'static str, now_ms: i64) -> Result<Self, ApiError> {
        Ok(Self {
            resource_type: "Bundle",
            id: medvault_crypto::random::uuid_v4().map_err(|e| ApiError::internal(e.to_string()))?,
            meta: BundleMeta { last_updated: medvault_base::time::format_instant(now_ms) },
            bundle_type,
            link: Vec::new(),
            entry: Vec::new(),
        })
    }

    pub fn to_json(&self) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(self).map_err(|e| ApiError::internal(format!("cannot serialize a Bundle: {e}")))
    }
}

/// The stored bytes of a resource as a raw JSON value, without re-parsing into a tree.
pub fn raw_resource(json: &[u8]) -> Result<Box<RawValue>, ApiError> {
    let text = String::from_utf8(json.to_vec()).map_err(|_| ApiError::internal("stored resource is not UTF-8"))?;
    RawValue::from_string(text).map_err(|e| ApiError::internal(format!("stored resource is not JSON: {e}")))
}

pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

fn status_line(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    };
    format!("{status} {reason}").trim_end().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    // Declaration order is the order in which a transaction processes entries.
    Delete,
    Post,
    Put,
    Get,
}

#[derive(Debug)]
struct Entry {
    index: usize,
    method: Method,
    resource_type: String,
    id: Option<String>,
    version: Option<String>,
    full_url: Option<String>,
    resource: Option<Value>,
    if_match: Option<u64>,
}

impl Service {
    /// Processes a `transaction` or `batch` Bundle and returns the response Bundle's JSON.
    pub fn process_bundle(
        &self,
        access: &ClinicalAccess,
        bundle: Value,
        base: &str,
        prefer: ReturnPreference,
    ) -> Result<Vec<u8>, ApiError> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(ApiError::bad_request("POST to the base URL takes a Bundle of type transaction or batch"));
        }
        match bundle.get("type").and_then(Value::as_str) {
            Some("transaction") => {
                access.set_kind(medvault_audit::EventKind::Transaction);
                self.transaction(access, bundle, base, prefer)
            }
            Some("batch") => {
                access.set_kind(medvault_audit::EventKind::Batch);
                self.batch(access, bundle, base, prefer)
            }
            Some(other) => Err(ApiError::bad_request(format!(
                "a Bundle of type '{other}' cannot be processed; POST a transaction or batch (use `medvault import` for collections)"
            ))),
            None => Err(ApiError::new(400, "required", "the Bundle has no type").at_path("Bundle.type")),
        }
    }

    fn transaction(
        &self,
        access: &ClinicalAccess,
        mut bundle: Value,
        base: &str,
        prefer: ReturnPreference,
    ) -> Result<Vec<u8>, ApiError> {
        let raw_entries = take_entries(&mut bundle)?;
        let mut entries = Vec::with_capacity(raw_entries.len());
        for (index, raw) in raw_entries.into_iter().enumerate() {
            entries.push(parse_entry(index, raw, base).map_err(|e| e.located(&format!("Bundle.entry[{index}]")))?);
        }
        // Assign ids to creates and map every fullUrl to the reference it becomes.
        let mut targets: HashMap<String, String> = HashMap::new();
        for entry in &mut entries {
            match entry.method {
                Method::Post => {
                    let id = medvault_crypto::random::uuid_v4().map_err(|e| ApiError::internal(e.to_string()))?;
                    entry.id = Some(id);
                }
                Method::Put | Method::Delete | Method::Get => {}
            }
            if let (Some(full_url), Some(id)) = (&entry.full_url, &entry.id) {
                if matches!(entry.method, Method::Post | Method::Put) {
                    targets.insert(full_url.clone(), format!("{}/{id}", entry.resource_type));
                }
            }
        }
        for entry in &mut entries {
            if let Some(resource) = &mut entry.resource {
                rewrite_references(resource, &targets);
                if entry.method == Method::Put {
                    check_body_id(resource, entry.id.as_deref())
                        .map_err(|e| e.located(&format!("Bundle.entry[{}]", entry.index)))?;
                }
                validate(resource, &entry.resource_type)
                    .map_err(|e| e.located(&format!("Bundle.entry[{}].resource", entry.index)))?;
            }
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| (entries[i].method, i));
        let mut writes = Vec::new();
        let mut write_of_entry = HashMap::new();
        for &i in &order {
            let entry = &mut entries[i];
            if let Some(write) = to_write(entry) {
                write_of_entry.insert(i, writes.len());
                writes.push(write);
            }
        }
        let entry_of_write = |w: usize| write_of_entry.iter().find(|(_, x)| **x == w).map_or(0, |(entry, _)| *entry);
        let kinds = self
            .authorize_writes(access, &writes)
            .map_err(|(w, error)| error.located(&format!("Bundle.entry[{}]", entry_of_write(w))))?;
        let audit = self.write_audit(access, &writes, &kinds)?;
        // Reads are answered after the writes, but a read the caller may not make fails
        // the whole transaction before anything is written.
        for entry in entries.iter().filter(|entry| entry.method == Method::Get) {
            if let Err(error) = self.get_entry(access, entry, base) {
                if error.status == 403 {
                    return Err(error.located(&format!("Bundle.entry[{}]", entry.index)));
                }
            }
        }
        let written = self
            .store()
            .write_audited(&writes, &access.principal().client, access.registrar(), &audit)
            .map_err(|error| {
                let index = match &error {
                    WriteError::PreconditionFailed { index, .. }
                    | WriteError::AlreadyExists { index }
                    | WriteError::Duplicate { index } => {
                        write_of_entry.iter().find(|(_, w)| **w == *index).map(|(e, _)| *e)
                    }
                    _ => None,
                };
                let api: ApiError = error.into();
                match index {
                    Some(entry) => api.located(&format!("Bundle.entry[{entry}]")),
                    None => api,
                }
            })?;
        let now_ms = self.store().clock().now_ms();
        let mut response = ResponseBundle::new("transaction-response", now_ms)?;
        for (i, entry) in entries.iter().enumerate() {
            let item = match write_of_entry.get(&i) {
                Some(&w) => written_entry(&written[w], base, prefer)?,
                None => self.get_entry(access, entry, base).unwrap_or_else(|e| error_entry(&e)),
            };
            response.entry.push(item);
        }
        response.to_json()
    }

    fn batch(
        &self,
        access: &ClinicalAccess,
        mut bundle: Value,
        base: &str,
        prefer: ReturnPreference,
    ) -> Result<Vec<u8>, ApiError> {
        let raw_entries = take_entries(&mut bundle)?;
        let count = raw_entries.len();
        let mut results: Vec<Option<ResponseEntry>> = (0..count).map(|_| None).collect();
        let mut writes = Vec::new();
        let mut gets = Vec::new();
        for (index, raw) in raw_entries.into_iter().enumerate() {
            let prepared = parse_entry(index, raw, base).and_then(|mut entry| {
                if entry.method == Method::Post {
                    entry.id = Some(medvault_crypto::random::uuid_v4().map_err(|e| ApiError::internal(e.to_string()))?);
                }
                if let Some(resource) = &entry.resource {
                    if entry.method == Method::Put {
                        check_body_id(resource, entry.id.as_deref())?;
                    }
                    validate(resource, &entry.resource_type)?;
                }
                Ok(entry)
            });
            match prepared {
                Err(error) => results[index] = Some(error_entry(&error)),
                Ok(entry) if entry.method == Method::Get => gets.push(entry),
                Ok(mut entry) => {
                    if let Some(write) = to_write(&mut entry) {
                        writes.push((index, write));
                    }
                }
            }
        }
        // Each entry stands alone: authorized alone, and a patient registered by one entry
        // is not thereby open to the others.
        let mut allowed = Vec::with_capacity(writes.len());
        let mut audit = Vec::with_capacity(writes.len());
        for (index, write) in writes {
            access.forget()?;
            let authorized = self
                .authorize_writes(access, std::slice::from_ref(&write))
                .map_err(|(_, error)| error)
                .and_then(|kinds| self.write_audit(access, std::slice::from_ref(&write), &kinds));
            match authorized {
                Ok(mut entries) => {
                    allowed.push((index, write));
                    audit.push(entries.pop());
                }
                Err(error) => results[index] = Some(error_entry(&error)),
            }
        }
        access.forget()?;
        let (indices, only_writes): (Vec<usize>, Vec<Write>) = allowed.into_iter().unzip();
        for (index, outcome) in indices.into_iter().zip(self.store().write_each_audited(
            &only_writes,
            &access.principal().client,
            access.registrar(),
            &audit,
        )) {
            results[index] = Some(match outcome {
                Ok(written) => written_entry(&written, base, prefer)?,
                Err(error) => error_entry(&error.into()),
            });
        }
        for entry in &gets {
            results[entry.index] = Some(self.get_entry(access, entry, base).unwrap_or_else(|e| error_entry(&e)));
        }
        let mut response = ResponseBundle::new("batch-response", self.store().clock().now_ms())?;
        response.entry = results.into_iter().map(Option::unwrap_or_default).collect();
        response.to_json()
    }

    fn get_entry(&self, access: &ClinicalAccess, entry: &Entry, base: &str) -> Result<ResponseEntry, ApiError> {
        let id = entry.id.as_deref().unwrap_or_default();
        let stored = match &entry.version {
            Some(version) => self.vread(access, &entry.resource_type, id, version)?,
            None => self.read(access, &entry.resource_type, id)?,
        };
        stored_entry(&stored, base, 200)
    }

    /// Imports resources one by one (NDJSON lines, `collection` entries): with an id it is
    /// an update-or-create, without one a create. Each result stands alone.
    pub fn import_resources(&self, access: &ClinicalAccess, resources: Vec<Value>) -> Vec<Result<Written, ApiError>> {
        let mut results: Vec<Option<Result<Written, ApiError>>> = (0..resources.len()).map(|_| None).collect();
        let mut writes = Vec::with_capacity(resources.len());
        for (index, resource) in resources.into_iter().enumerate() {
            let prepared = (|| {
                let resource_type = resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::new(400, "structure", "the resource has no resourceType"))?
                    .to_string();
                check_type(&resource_type)?;
                let (id, must_be_new) = match resource.get("id").and_then(Value::as_str) {
                    Some(id) => {
                        check_type_and_id(&resource_type, id)?;
                        (id.to_string(), false)
                    }
                    None => (medvault_crypto::random::uuid_v4().map_err(|e| ApiError::internal(e.to_string()))?, true),
                };
                validate(&resource, &resource_type)?;
                Ok(Write { resource_type, id, action: WriteAction::Put(resource), if_match: None, must_be_new })
            })();
            match prepared {
                Ok(write) => writes.push((index, write)),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        // Authorized one by one, like a batch.
        let mut allowed = Vec::with_capacity(writes.len());
        let mut audit = Vec::with_capacity(writes.len());
        for (index, write) in writes {
            let authorized = access.forget().and_then(|()| {
                let kinds = self.authorize_writes(access, std::slice::from_ref(&write)).map_err(|(_, e)| e)?;
                self.write_audit(access, std::slice::from_ref(&write), &kinds)
            });
            match authorized {
                Ok(mut entries) => {
                    allowed.push((index, write));
                    audit.push(entries.pop());
                }
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        let _ = access.forget();
        let (indices, only_writes): (Vec<usize>, Vec<Write>) = allowed.into_iter().unzip();
        for (index, outcome) in indices.into_iter().zip(self.store().write_each_audited(
            &only_writes,
            &access.principal().client,
            access.registrar(),
            &audit,
        )) {
            results[index] = Some(outcome.map_err(ApiError::from));
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(ApiError::internal("import lost an entry")))).collect()
    }
}

trait AtPath {
    fn at_path(self, path: &str) -> Self;
}

impl AtPath for ApiError {
    fn at_path(mut self, path: &str) -> Self {
        for issue in &mut self.issues {
            issue.expression.push(path.to_string());
        }
        self
    }
}

fn take_entries(bundle: &mut Value) -> Result<Vec<Value>, ApiError> {
    let entries = match bundle.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(ApiError::new(400, "structure", "Bundle.entry must be an array").at_path("Bundle.entry")),
    };
    if entries.len() > BUNDLE_ENTRIES_MAX {
        return Err(ApiError::new(
            413,
            "too-long",
            format!("the Bundle has {} entries; the limit is {BUNDLE_ENTRIES_MAX}", entries.len()),
        ));
    }
    Ok(entries)
}

fn parse_entry(index: usize, mut raw: Value, base: &str) -> Result<Entry, ApiError> {
    let request = raw
        .get_mut("request")
        .map(Value::take)
        .ok_or_else(|| ApiError::new(400, "required", "the entry has no request"))?;
    let method = match request.get("method").and_then(Value::as_str) {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        Some(other) => {
            return Err(ApiError::new(400, "not-supported", format!("request.method {other} is not supported here")))
        }
        None => return Err(ApiError::new(400, "required", "the entry's request has no method")),
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(400, "required", "the entry's request has no url"))?;
    let relative = url.strip_prefix(base).map(|rest| rest.trim_start_matches('/')).unwrap_or(url);
    if relative.contains('?') {
        return Err(ApiError::new(
            400,
            "not-supported",
            format!("'{url}': conditional and search requests are not supported yet"),
        ));
    }
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(text) => Some(parse_etag(text)?),
        None => None,
    };
    if request.get("ifNoneExist").is_some()
        || request.get("ifNoneMatch").is_some()
        || request.get("ifModifiedSince").is_some()
    {
        return Err(ApiError::new(
            400,
            "not-supported",
            "conditional requests (ifNoneExist, ifNoneMatch, ifModifiedSince) are not supported yet",
        ));
    }
    let parts: Vec<&str> = relative.split('/').collect();
    let (resource_type, id, version) = match (method, parts.as_slice()) {
        (Method::Post, [resource_type]) => (*resource_type, None, None),
        (Method::Put | Method::Delete | Method::Get, [resource_type, id]) => (*resource_type, Some(*id), None),
        (Method::Get, [resource_type, id, "_history", version]) => (*resource_type, Some(*id), Some(*version)),
        _ => return Err(ApiError::bad_request(format!("'{url}' is not a valid url for a {method:?} entry"))),
    };
    match id {
        Some(id) => check_type_and_id(resource_type, id)?,
        None => check_type(resource_type)?,
    }
    let full_url = raw.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let resource = match method {
        Method::Post | Method::Put => {
            let resource = raw.get_mut("resource").map(Value::take).filter(|r| !r.is_null());
            Some(resource.ok_or_else(|| ApiError::new(400, "required", "a POST or PUT entry needs a resource"))?)
        }
        Method::Delete | Method::Get => None,
    };
    Ok(Entry {
        index,
        method,
        resource_type: resource_type.to_string(),
        id: id.map(str::to_string),
        version: version.map(str::to_string),
        full_url,
        resource,
        if_match,
    })
}

fn check_body_id(resource: &Value, id: Option<&str>) -> Result<(), ApiError> {
    match (resource.get("id").and_then(Value::as_str), id) {
        (Some(body_id), Some(id)) if body_id == id => Ok(()),
        (None, Some(_)) => Err(ApiError::bad_request("a PUT entry's resource must carry the id of its url")),
        _ => Err(ApiError::bad_request("the resource's id differs from the entry's url")),
    }
}

fn to_write(entry: &mut Entry) -> Option<Write> {
    let id = entry.id.clone()?;
    let action = match entry.method {
        Method::Post | Method::Put => WriteAction::Put(entry.resource.take()?),
        Method::Delete => WriteAction::Delete,
        Method::Get => return None,
    };
    Some(Write {
        resource_type: entry.resource_type.clone(),
        id,
        action,
        if_match: entry.if_match,
        must_be_new: entry.method == Method::Post,
    })
}

/// Replaces every `reference` that names a Bundle entry's fullUrl with `Type/id`.
fn rewrite_references(value: &mut Value, targets: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (name, child) in object.iter_mut() {
                if name == "reference" {
                    if let Value::String(reference) = child {
                        if let Some(target) = targets.get(reference.as_str()) {
                            *reference = target.clone();
                        }
                    }
                } else {
                    rewrite_references(child, targets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_references(item, targets)),
        _ => {}
    }
}

/// Parses an ETag or `If-Match` value: `W/"3"`, `"3"` or `3`.
pub fn parse_etag(text: &str) -> Result<u64, ApiError> {
    let trimmed = text.trim();
    let unweak = trimmed.strip_prefix("W/").unwrap_or(trimmed);
    let unquoted = unweak.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(unweak);
    unquoted
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::bad_request(format!("'{trimmed}' is not a version ETag such as W/\"3\"")))
}

fn written_entry(written: &Written, base: &str, prefer: ReturnPreference) -> Result<ResponseEntry, ApiError> {
    let (status, location) = if written.noop || written.deleted {
        (204, None)
    } else if written.created {
        (201, Some(format!("{}/{}/_history/{}", written.resource_type, written.id, written.version)))
    } else {
        (200, Some(format!("{}/{}/_history/{}", written.resource_type, written.id, written.version)))
    };
    let include = !written.deleted && prefer == ReturnPreference::Representation;
    Ok(ResponseEntry {
        full_url: (!written.deleted).then(|| format!("{base}/{}/{}", written.resource_type, written.id)),
        resource: if include { Some(raw_resource(&written.json)?) } else { None },
        request: None,
        response: Some(EntryResponse {
            status: status_line(status),
            location,
            etag: (!written.noop).then(|| etag(written.version)),
            last_modified: (!written.noop).then(|| medvault_base::time::format_instant(written.recorded_ms)),
            outcome: None,
            extension: if written.noop {
                Vec::new()
            } else {
                vec![
                    serde_json::json!({"url": LEAF_INDEX_EXTENSION, "valueString": written.leaf_index.to_string()}),
                    serde_json::json!({"url": CHECKPOINT_SIZE_EXTENSION, "valueString": written.checkpoint_size.to_string()}),
                ]
            },
        }),
    })
}

fn stored_entry(stored: &StoredVersion, base: &str, status: u16) -> Result<ResponseEntry, ApiError> {
    Ok(ResponseEntry {
        full_url: Some(format!("{base}/{}/{}", stored.resource_type, stored.id)),
        resource: Some(raw_resource(&stored.json)?),
        request: None,
        response: Some(EntryResponse {
            status: status_line(status),
            etag: Some(etag(stored.version)),
            last_modified: Some(medvault_base::time::format_instant(stored.recorded_ms)),
            ..Default::default()
        }),
    })
}

fn error_entry(error: &ApiError) -> ResponseEntry {
    ResponseEntry {
        response: Some(EntryResponse {
            status: status_line(error.status),
            outcome: Some(operation_outcome(&error.issues)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
