//! The patient compartment: which patient a resource belongs to, from the R4 Patient
//! CompartmentDefinition and its SearchParameters (generated into `model/r4-model.json`;
//! what could not be carried over is listed in `model/README.md`).
//!
//! Only relative literal references `Patient/{id}` (or `Patient/{id}/_history/{version}`)
//! count: an absolute URL, a `urn:uuid:` or a contained reference names no patient here.

use serde_json::Value;

use crate::model;
use crate::validate::{is_resource_type, is_valid_id};

/// The id of the patient whose compartment this resource belongs to: for a Patient, its own id;
/// otherwise the first Patient reference found through the Patient CompartmentDefinition's
/// parameters for that type, in the definition's order (e.g. Observation: subject, performer).
/// `None` when the type is not in the patient compartment or no such reference is present.
pub fn patient_compartment_owner(resource: &Value) -> Option<String> {
    let resource_type = resource.get("resourceType")?.as_str()?;
    if resource_type == "Patient" {
        return resource.get("id")?.as_str().map(str::to_string);
    }
    let paths = model::model().compartment.get(resource_type)?;
    paths.iter().find_map(|path| first_patient_reference(resource, path)).map(str::to_string)
}

/// Parses a relative literal reference `Type/id` or `Type/id/_history/vid` into (type, id).
pub fn parse_relative_reference(reference: &str) -> Option<(&str, &str)> {
    let mut parts = reference.split('/');
    let resource_type = parts.next()?;
    let id = parts.next()?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => {}
        (Some("_history"), Some(version), None) if is_valid_id(version) => {}
        _ => return None,
    }
    (is_resource_type(resource_type) && is_valid_id(id)).then_some((resource_type, id))
}

/// The first `Patient/{id}` reference at `path` (JSON property names) under `value`,
/// following arrays in document order.
fn first_patient_reference<'a>(value: &'a Value, path: &[Box<str>]) -> Option<&'a str> {
    match value {
        Value::Array(items) => items.iter().find_map(|item| first_patient_reference(item, path)),
        Value::Object(object) => match path.split_first() {
            Some((name, rest)) => first_patient_reference(object.get(&**name)?, rest),
            None => {
                let reference = object.get("reference")?.as_str()?;
                match parse_relative_reference(reference)? {
                    ("Patient", id) => Some(id),
                    _ => None,
                }
            }
        },
        _ => None,
    }
}

/// The practitioners a CareTeam or Encounter says care for its patient: `Some` (possibly
/// empty) for those two types, `None` for every other. The patient is the resource's
/// compartment owner ([`patient_compartment_owner`]).
///
/// Only literal `Practitioner/{id}` references count: CareTeam `participant.member`,
/// Encounter `participant.individual`. A CareTeam that is `inactive` or
/// `entered-in-error`, and an Encounter that is `cancelled` or `entered-in-error`, states
/// no relationship.
pub fn care_relationships(resource: &Value) -> Option<Vec<String>> {
    let (participant_field, ended) = match resource.get("resourceType")?.as_str()? {
        "CareTeam" => ("member", ["inactive", "entered-in-error"]),
        "Encounter" => ("individual", ["cancelled", "entered-in-error"]),
        _ => return None,
    };
    let status = resource.get("status").and_then(Value::as_str).unwrap_or("");
    if ended.contains(&status) {
        return Some(Vec::new());
    }
    let mut practitioners: Vec<String> = resource
        .get("participant")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|participant| participant.get(participant_field)?.get("reference")?.as_str())
        .filter_map(parse_relative_reference)
        .filter(|(resource_type, _)| *resource_type == "Practitioner")
        .map(|(_, id)| id.to_string())
        .collect();
    practitioners.sort();
    practitioners.dedup();
    Some(practitioners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_references_parse() {
        assert_eq!(parse_relative_reference("Patient/123"), Some(("Patient", "123")));
        assert_eq!(parse_relative_reference("Patient/123/_history/2"), Some(("Patient", "123")));
        assert_eq!(parse_relative_reference("Patient/123/_history/"), None);
        assert_eq!(parse_relative_reference("Patient/123/history/2"), None);
        assert_eq!(parse_relative_reference("Patient/12 3"), None);
        assert_eq!(parse_relative_reference("Patient"), None);
        assert_eq!(parse_relative_reference("Patient/"), None);
        assert_eq!(parse_relative_reference("Unknown/1"), None);
        assert_eq!(parse_relative_reference("http://x/Patient/1"), None);
    }
}
