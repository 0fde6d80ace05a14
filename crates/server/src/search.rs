//! FHIR search, HTTP-free: a query parsed by `medvault_fhir::search`, run by the store
//! against its keyed index with the caller's restriction, every result checked again and
//! noted for the audit record, `_include`/`_revinclude` resolved record by record, and the
//! `searchset` Bundle with its paging links. Also `Patient/{id}/$everything` and the
//! matching of conditional creates, updates and deletes.
//!
//! Architecture invariant: a resource reaches a Bundle only after
//! [`ClinicalAccess::check_version`] or the same two checks (scope, patient) passed for it;
//! counts come from plans already restricted to the caller's patients.

use std::collections::HashSet;

use medvault_auth::scope::Interaction;
use medvault_base::limits::{SEARCH_COUNT_DEFAULT, SEARCH_COUNT_MAX, SEARCH_INCLUDED_RESOURCES_MAX};
use medvault_fhir::outcome::{Issue, Severity};
use medvault_fhir::search::{
    extract, parse_query, Clause, Handling, IndexValue, Query, QueryValue, SearchError, SearchWarning, Summary, Total,
};
use medvault_fhir::summary::{self, SummaryKind};
use medvault_store::search::{Previous, SearchOptions, SearchResult, Visibility};
use medvault_store::{StoreError, StoredVersion};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::auth::{denied, ClinicalAccess};
use crate::bundle::{raw_resource, BundleLink, BundleMeta};
use crate::error::ApiError;
use crate::service::{check_type, check_type_and_id, missing, Service};

/// The paging parameter this server adds to its links.
pub const CURSOR_PARAMETER: &str = "_cursor";
/// `_include:iterate` follows references this many levels deep at most.
const INCLUDE_ITERATIONS_MAX: usize = 3;
/// The tag a subsetted resource carries (`_elements`, `_summary`).
const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// One search as the HTTP layer received it.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    /// The FHIR base URL the client used, for `fullUrl` and links.
    pub base: &'a str,
    pub resource_type: &'a str,
    /// The query's parameters, percent-decoded, in order (URL and form body together).
    pub pairs: &'a [(String, String)],
    pub handling: Handling,
}

/// A `searchset` Bundle; resources are spliced in as stored (or subsetted).
#[derive(Debug, Serialize)]
struct SearchBundle {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    meta: BundleMeta,
    #[serde(rename = "type")]
    bundle_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    link: Vec<BundleLink>,
    entry: Vec<SearchEntry>,
}

#[derive(Debug, Serialize)]
struct SearchEntry {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    resource: Box<RawValue>,
    search: EntrySearch,
}

#[derive(Debug, Serialize)]
struct EntrySearch {
    mode: &'static str,
}

/// How each matched resource is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subset {
    Whole,
    /// `_elements`: these top-level elements (with `resourceType`, `id`, `meta`).
    Elements(Vec<String>),
    /// `_summary=data`: without the narrative.
    WithoutText,
    /// `_summary=true` or `_summary=text`: what the definitions of each resource's type
    /// keep (`medvault_fhir::summary`).
    Summary(SummaryKind),
}

impl Service {
    /// A type-level search (`GET /fhir/{type}?…`, `POST /fhir/{type}/_search`), answered as
    /// a `searchset` Bundle.
    pub fn search(&self, access: &ClinicalAccess, request: &SearchRequest<'_>) -> Result<Vec<u8>, ApiError> {
        check_type(request.resource_type)?;
        access.check_scope(request.resource_type, Interaction::Search)?;
        let (cursor, pairs) = split_cursor(request.pairs);
        let (mut query, warnings) =
            parse_query(request.resource_type, &pairs, request.handling).map_err(search_error)?;
        let mut issues: Vec<Issue> = warnings.iter().map(warning_issue).collect();
        check_inner_scopes(access, &query)?;
        let subset = subset(&mut query, request.handling, &mut issues)?;
        let visibility = access.visibility()?;
        // `_summary=count`, or `_count=0` (a page of nothing: what is asked is the total).
        let count_only = query.summary == Some(Summary::Count) || query.count == Some(0);
        let options = SearchOptions {
            visibility: &visibility,
            page_size: if count_only { 0 } else { query.count.unwrap_or(SEARCH_COUNT_DEFAULT).min(SEARCH_COUNT_MAX) },
            cursor: cursor.as_deref(),
            query_digest: query_digest(request.resource_type, &pairs),
            total: count_only || matches!(query.total, Some(Total::Accurate | Total::Estimate)),
        };
        let result = match self.store().search(&query, &options) {
            // Lenient handling: a sort that cannot be done is dropped and reported.
            Err(StoreError::SearchRefused(message))
                if !query.sort.is_empty() && request.handling == Handling::Lenient =>
            {
                query.sort.clear();
                issues.push(warning(format!("_sort was ignored: {message}")));
                self.store().search(&query, &options)?
            }
            other => other?,
        };
        if count_only && result.total.is_none() {
            return Err(ApiError::new(
                400,
                "too-costly",
                "_summary=count: the number of matches cannot be computed within the limits; narrow the search",
            ));
        }
        issues.extend(result.warnings.iter().map(|w| warning(w.clone())));
        let matches = self.checked(access, result.matches.clone(), Interaction::Search);
        let included = self.includes(access, &query, &visibility, &matches, &mut issues)?;
        let links = links(request, &pairs, cursor.as_deref(), &result);
        bundle(self, request.base, links, result.total, &matches, &included, &subset, &issues)
    }

    /// `Patient/{id}/$everything`: the records of one patient's compartment the caller may
    /// read, newest first, paged (`_count`, and the cursor of the `next` link).
    pub fn everything(
        &self,
        access: &ClinicalAccess,
        base: &str,
        id: &str,
        pairs: &[(String, String)],
        handling: Handling,
    ) -> Result<Vec<u8>, ApiError> {
        check_type_and_id("Patient", id)?;
        access.check_scope("Patient", Interaction::Read)?;
        match self.store().read("Patient", id)? {
            None => return Err(missing(access, format!("Patient/{id} does not exist"))),
            Some(patient) if !access.sees(patient.compartment.as_ref())? => return Err(denied()),
            Some(patient) if patient.deleted => {
                return Err(ApiError::new(410, "deleted", format!("Patient/{id} was deleted")))
            }
            Some(_) => {}
        }
        let (cursor, pairs) = split_cursor(pairs);
        let mut issues = Vec::new();
        let mut page_size = SEARCH_COUNT_DEFAULT;
        for (name, value) in &pairs {
            match name.as_str() {
                "_count" => match value.parse::<usize>() {
                    Ok(count) if count <= SEARCH_COUNT_MAX => page_size = count,
                    _ if handling == Handling::Lenient => {
                        page_size = SEARCH_COUNT_MAX;
                        issues.push(warning(format!("_count must be a number up to {SEARCH_COUNT_MAX}")));
                    }
                    _ => {
                        return Err(ApiError::bad_request(format!("_count must be a number up to {SEARCH_COUNT_MAX}")))
                    }
                },
                "_format" | "_pretty" => {}
                other if handling == Handling::Lenient => {
                    issues.push(warning(format!("$everything does not support '{other}'; it was ignored")))
                }
                other => return Err(ApiError::bad_request(format!("$everything does not support '{other}'"))),
            }
        }
        let compartment = self.store().compartment_token(id);
        let options = SearchOptions {
            visibility: &Visibility::All,
            page_size,
            cursor: cursor.as_deref(),
            query_digest: query_digest(&format!("Patient/{id}/$everything"), &pairs),
            total: false,
        };
        let result = self.store().search_compartment(&compartment, &options)?;
        // The compartment is this patient's; the scopes still decide which types are shown.
        let matches = self.checked(access, result.matches.clone(), Interaction::Read);
        let path = format!("Patient/{id}/$everything");
        let request = SearchRequest { base, resource_type: &path, pairs: &pairs, handling };
        let links = links(&request, &pairs, cursor.as_deref(), &result);
        bundle(self, base, links, None, &matches, &[], &Subset::Whole, &issues)
    }

    /// The resources a conditional create, update or delete matches (at most two: the
    /// caller only needs to tell none, one and several apart). The criteria are parsed
    /// strictly: an unknown parameter must not match everything.
    pub fn conditional_matches(
        &self,
        access: &ClinicalAccess,
        resource_type: &str,
        criteria: &[(String, String)],
    ) -> Result<Vec<StoredVersion>, ApiError> {
        check_type(resource_type)?;
        access.check_scope(resource_type, Interaction::Search)?;
        let criteria: Vec<(String, String)> =
            criteria.iter().filter(|(name, _)| !matches!(name.as_str(), "_format" | "_pretty")).cloned().collect();
        let (query, _) = parse_query(resource_type, &criteria, Handling::Strict).map_err(search_error)?;
        if query.clauses.is_empty() && query.has.is_empty() {
            return Err(ApiError::bad_request("a conditional interaction needs search criteria"));
        }
        check_inner_scopes(access, &query)?;
        let visibility = access.visibility()?;
        let options = SearchOptions {
            visibility: &visibility,
            page_size: 2,
            cursor: None,
            query_digest: query_digest(resource_type, &criteria),
            total: false,
        };
        let result = self.store().search(&query, &options)?;
        Ok(self.checked(access, result.matches, Interaction::Search))
    }

    /// The versions the caller may be shown, each noted for the audit record. A version the
    /// store returned but the access refuses is a bug in the plan: logged, never shown.
    fn checked(
        &self,
        access: &ClinicalAccess,
        versions: Vec<StoredVersion>,
        interaction: Interaction,
    ) -> Vec<StoredVersion> {
        versions
            .into_iter()
            .filter(|version| {
                let allowed = access.allows(&version.resource_type, interaction);
                if !allowed {
                    return false;
                }
                match access.check_version(version, interaction) {
                    Ok(()) => {
                        self.touch(access, version);
                        true
                    }
                    Err(_) => {
                        tracing::error!(target: "medvault::security", "a search returned a record the caller may not see; it was withheld");
                        false
                    }
                }
            })
            .collect()
    }

    /// The current version of `Type/id` if the caller may read it, else `None` (whether it
    /// is missing, deleted or another patient's: the Bundle says nothing either way).
    fn readable(
        &self,
        access: &ClinicalAccess,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredVersion>, ApiError> {
        if !medvault_fhir::is_resource_type(resource_type)
            || !medvault_fhir::is_valid_id(id)
            || !access.allows(resource_type, Interaction::Read)
        {
            return Ok(None);
        }
        match self.store().read(resource_type, id)? {
            Some(version) if !version.deleted && access.sees(version.compartment.as_ref())? => {
                self.touch(access, &version);
                Ok(Some(version))
            }
            _ => Ok(None),
        }
    }

    /// `_include` (with `:iterate`) and `_revinclude`: each resource is checked on its own.
    fn includes(
        &self,
        access: &ClinicalAccess,
        query: &Query,
        visibility: &Visibility,
        matches: &[StoredVersion],
        issues: &mut Vec<Issue>,
    ) -> Result<Vec<StoredVersion>, ApiError> {
        let mut seen: HashSet<(String, String)> =
            matches.iter().map(|m| (m.resource_type.clone(), m.id.clone())).collect();
        let mut included: Vec<StoredVersion> = Vec::new();
        let mut truncated = false;
        let mut frontier: Vec<StoredVersion> = matches.to_vec();
        for pass in 0..INCLUDE_ITERATIONS_MAX {
            let mut found = Vec::new();
            for include in query.include.iter().filter(|include| pass == 0 || include.iterate) {
                for source in frontier.iter().filter(|s| s.resource_type == include.source_type) {
                    for (target_type, target_id) in references(source, &include.param) {
                        if include.target_type.as_ref().is_some_and(|t| *t != target_type) {
                            continue;
                        }
                        if included.len() + found.len() >= SEARCH_INCLUDED_RESOURCES_MAX {
                            truncated = true;
                            break;
                        }
                        if !seen.insert((target_type.clone(), target_id.clone())) {
                            continue;
                        }
                        if let Some(version) = self.readable(access, &target_type, &target_id)? {
                            found.push(version);
                        }
                    }
                }
            }
            if found.is_empty() {
                break;
            }
            included.extend(found.iter().cloned());
            frontier = found;
        }
        for revinclude in &query.revinclude {
            if !access.allows(&revinclude.source_type, Interaction::Search) {
                issues.push(warning(format!(
                    "_revinclude of {} was left out: the granted scopes do not allow searching it",
                    revinclude.source_type
                )));
                continue;
            }
            let sources: Vec<StoredVersion> = if revinclude.iterate {
                matches.iter().chain(included.iter()).cloned().collect()
            } else {
                matches.to_vec()
            };
            for target in &sources {
                let remaining = SEARCH_INCLUDED_RESOURCES_MAX.saturating_sub(included.len());
                if remaining == 0 {
                    truncated = true;
                    break;
                }
                let inner = Query {
                    resource_type: revinclude.source_type.clone(),
                    clauses: vec![Clause {
                        param: revinclude.param.clone(),
                        modifier: None,
                        chain: None,
                        values: vec![QueryValue::Reference {
                            resource_type: Some(target.resource_type.clone()),
                            id: Some(target.id.clone()),
                            url: format!("{}/{}", target.resource_type, target.id),
                        }],
                    }],
                    ..Query::default()
                };
                let options = SearchOptions {
                    visibility,
                    page_size: remaining,
                    cursor: None,
                    query_digest: [0; 32],
                    total: false,
                };
                let result = self.store().search(&inner, &options)?;
                truncated |= result.next_cursor.is_some();
                for version in self.checked(access, result.matches, Interaction::Search) {
                    if seen.insert((version.resource_type.clone(), version.id.clone())) {
                        included.push(version);
                    }
                }
            }
        }
        if truncated {
            issues.push(warning(format!(
                "_include/_revinclude stopped at {SEARCH_INCLUDED_RESOURCES_MAX} resources for this page"
            )));
        }
        Ok(included)
    }
}

/// The `Type/id` references a resource has for a parameter (relative ones only).
fn references(source: &StoredVersion, param: &str) -> Vec<(String, String)> {
    let Ok(value) = serde_json::from_slice::<Value>(&source.json) else { return Vec::new() };
    extract(&value)
        .into_iter()
        .filter(|entry| entry.param == param)
        .filter_map(|entry| match entry.value {
            IndexValue::Reference { resource_type: Some(t), id: Some(id), .. } => Some((t, id)),
            _ => None,
        })
        .collect()
}

/// Chains, `_has` and `_revinclude` search other types: the scopes must allow that too.
fn check_inner_scopes(access: &ClinicalAccess, query: &Query) -> Result<(), ApiError> {
    for clause in &query.clauses {
        if let Some(chain) = &clause.chain {
            access.check_scope(&chain.target_type, Interaction::Search)?;
        }
    }
    for has in &query.has {
        access.check_scope(&has.source_type, Interaction::Search)?;
    }
    Ok(())
}

/// `_elements` and `_summary`: how results are shown.
fn subset(query: &mut Query, handling: Handling, issues: &mut Vec<Issue>) -> Result<Subset, ApiError> {
    let summary = match query.summary {
        Some(Summary::True) => Some(SummaryKind::True),
        Some(Summary::Text) => Some(SummaryKind::Text),
        Some(Summary::Data) => return Ok(Subset::WithoutText),
        _ => None,
    };
    if let Some(kind) = summary {
        if !query.elements.is_empty() {
            // The specification leaves the pair undefined; the summary wins, and says so.
            let message = "_elements is ignored beside _summary=true or _summary=text";
            if handling == Handling::Strict {
                return Err(ApiError::new(400, "not-supported", message));
            }
            issues.push(warning(message.to_string()));
        }
        return Ok(Subset::Summary(kind));
    }
    if query.elements.is_empty() {
        Ok(Subset::Whole)
    } else {
        Ok(Subset::Elements(query.elements.clone()))
    }
}

/// Splits the server's own cursor parameter from the query's.
fn split_cursor(pairs: &[(String, String)]) -> (Option<String>, Vec<(String, String)>) {
    let cursor = pairs.iter().find(|(name, _)| name == CURSOR_PARAMETER).map(|(_, value)| value.clone());
    let rest = pairs.iter().filter(|(name, _)| name != CURSOR_PARAMETER).cloned().collect();
    (cursor, rest)
}

/// SHA-256 of the query (without the cursor): a cursor only works for its own query.
fn query_digest(path: &str, pairs: &[(String, String)]) -> [u8; 32] {
    let mut text = format!("{path}?");
    text.push_str(&encode(pairs));
    medvault_crypto::sha256(text.as_bytes())
}

fn encode(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

fn links(
    request: &SearchRequest<'_>,
    pairs: &[(String, String)],
    cursor: Option<&str>,
    result: &SearchResult,
) -> Vec<BundleLink> {
    let query = encode(pairs);
    let first = if query.is_empty() {
        format!("{}/{}", request.base, request.resource_type)
    } else {
        format!("{}/{}?{query}", request.base, request.resource_type)
    };
    let with_cursor = |cursor: &str| {
        let separator = if query.is_empty() { '?' } else { '&' };
        format!("{first}{separator}{CURSOR_PARAMETER}={cursor}")
    };
    let mut links = vec![BundleLink { relation: "self", url: cursor.map_or_else(|| first.clone(), with_cursor) }];
    links.push(BundleLink { relation: "first", url: first.clone() });
    match &result.previous {
        Some(Previous::First) => links.push(BundleLink { relation: "previous", url: first.clone() }),
        Some(Previous::Cursor(previous)) => links.push(BundleLink { relation: "previous", url: with_cursor(previous) }),
        None => {}
    }
    if let Some(next) = &result.next_cursor {
        links.push(BundleLink { relation: "next", url: with_cursor(next) });
    }
    links
}

#[allow(clippy::too_many_arguments)]
fn bundle(
    service: &Service,
    base: &str,
    link: Vec<BundleLink>,
    total: Option<u64>,
    matches: &[StoredVersion],
    included: &[StoredVersion],
    subset: &Subset,
    issues: &[Issue],
) -> Result<Vec<u8>, ApiError> {
    let entry_of = |version: &StoredVersion, mode: &'static str, subset: &Subset| -> Result<SearchEntry, ApiError> {
        Ok(SearchEntry {
            full_url: Some(format!("{base}/{}/{}", version.resource_type, version.id)),
            resource: shown(&version.json, subset)?,
            search: EntrySearch { mode },
        })
    };
    let mut entry = Vec::with_capacity(matches.len() + included.len() + 1);
    for version in matches {
        entry.push(entry_of(version, "match", subset)?);
    }
    for version in included {
        entry.push(entry_of(version, "include", &Subset::Whole)?);
    }
    if !issues.is_empty() {
        let outcome = medvault_fhir::outcome::operation_outcome(issues);
        let resource = RawValue::from_string(outcome.to_string()).map_err(|e| ApiError::internal(e.to_string()))?;
        entry.push(SearchEntry { full_url: None, resource, search: EntrySearch { mode: "outcome" } });
    }
    let bundle = SearchBundle {
        resource_type: "Bundle",
        id: medvault_crypto::random::uuid_v4().map_err(|e| ApiError::internal(e.to_string()))?,
        meta: BundleMeta { last_updated: medvault_base::time::format_instant(service.store().clock().now_ms()) },
        bundle_type: "searchset",
        total,
        link,
        entry,
    };
    serde_json::to_vec(&bundle).map_err(|e| ApiError::internal(format!("cannot serialize a Bundle: {e}")))
}

/// A resource as shown: as stored, or subsetted and tagged `SUBSETTED`.
fn shown(json: &[u8], subset: &Subset) -> Result<Box<RawValue>, ApiError> {
    if let Subset::Whole = subset {
        return raw_resource(json);
    }
    let mut value: Value =
        serde_json::from_slice(json).map_err(|_| ApiError::internal("a stored resource is not JSON"))?;
    let keep: Box<dyn Fn(&str) -> bool> = match subset {
        Subset::Whole => Box::new(|_: &str| true),
        Subset::WithoutText => Box::new(|name: &str| name != "text"),
        Subset::Summary(kind) => {
            let (resource_type, kind) = (value["resourceType"].as_str().unwrap_or_default().to_string(), *kind);
            Box::new(move |name: &str| summary::keeps(&resource_type, name, kind))
        }
        Subset::Elements(elements) => {
            let elements = elements.clone();
            Box::new(move |name: &str| {
                matches!(name, "resourceType" | "id" | "meta") || elements.iter().any(|element| element == name)
            })
        }
    };
    if let Value::Object(object) = &mut value {
        object.retain(|name, _| keep(name.trim_start_matches('_')));
        let meta = object.entry("meta").or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(meta) = meta {
            let tags = meta.entry("tag").or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(tags) = tags {
                tags.push(serde_json::json!({"system": SUBSETTED_SYSTEM, "code": "SUBSETTED"}));
            }
        }
    }
    RawValue::from_string(value.to_string()).map_err(|e| ApiError::internal(e.to_string()))
}

fn warning(diagnostics: String) -> Issue {
    Issue { severity: Severity::Warning, code: "not-supported", diagnostics, expression: Vec::new() }
}

fn warning_issue(search_warning: &SearchWarning) -> Issue {
    warning(search_warning.message.clone()).at(search_warning.parameter.clone())
}

/// A refused query: 400 naming the parameter (404 for a type that does not exist).
pub fn search_error(error: SearchError) -> ApiError {
    let code = match &error {
        SearchError::UnknownType { .. } => return ApiError::not_found(error.to_string()),
        SearchError::UnknownParameter { .. } | SearchError::Unsupported { .. } => "not-supported",
        SearchError::TooMany { .. } | SearchError::CountTooLarge { .. } => "too-costly",
        _ => "invalid",
    };
    let parameter = match &error {
        SearchError::UnknownParameter { parameter }
        | SearchError::BadValue { parameter, .. }
        | SearchError::BadModifier { parameter, .. }
        | SearchError::Unsupported { parameter, .. } => Some(parameter.clone()),
        _ => None,
    };
    let mut issue = Issue::error(code, error.to_string());
    if let Some(parameter) = parameter {
        issue = issue.at(parameter);
    }
    ApiError::with_issues(400, vec![issue])
}
