//! `_summary=true` and `_summary=text` (FHIR R4 search, *Summary*): which top-level
//! properties of a resource each keeps, from the `isSummary` flags and minimum
//! cardinalities of the official definitions (generated into `model/r4-model.json`).
//!
//! The subset is taken at the top level: an element kept is kept whole. Mandatory
//! elements (minimum 1) are always kept, so that a summary stays a valid resource.

use crate::model::model;

/// Which summary a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryKind {
    /// The elements the definition marks as summary, and the mandatory ones.
    True,
    /// `text`, `id`, `meta` and the mandatory elements.
    Text,
}

/// Whether the summary of a `resource_type` keeps its top-level JSON property `property`
/// (for a primitive's `_name` companion, give `name`). `resourceType` is always kept; an
/// unknown resource type keeps only `id` and `meta` besides.
pub fn keeps(resource_type: &str, property: &str, kind: SummaryKind) -> bool {
    if property == "resourceType" {
        return true;
    }
    let model = model();
    let Some(node) = model.resource_node(resource_type) else { return matches!(property, "id" | "meta") };
    let Some((element, _, _)) = model.node(node).property(property) else { return false };
    if element.min > 0 {
        return true;
    }
    match kind {
        SummaryKind::True => element.summary,
        SummaryKind::Text => matches!(property, "text" | "id" | "meta"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_keeps_the_summary_elements_and_the_mandatory_ones() {
        for property in ["resourceType", "id", "meta", "identifier", "name", "gender", "birthDate", "deceasedBoolean"] {
            assert!(keeps("Patient", property, SummaryKind::True), "{property}");
        }
        for property in ["text", "contact", "photo", "communication", "maritalStatus", "extension", "nonsense"] {
            assert!(!keeps("Patient", property, SummaryKind::True), "{property}");
        }
        // Observation: `status` and `code` are mandatory, `valueQuantity` a summary choice.
        for property in ["status", "code", "subject", "valueQuantity", "effectiveDateTime", "component"] {
            assert!(keeps("Observation", property, SummaryKind::True), "{property}");
        }
        for property in ["note", "interpretation", "referenceRange", "method"] {
            assert!(!keeps("Observation", property, SummaryKind::True), "{property}");
        }
    }

    #[test]
    fn a_text_summary_keeps_the_narrative_and_the_mandatory_elements() {
        for property in ["resourceType", "id", "meta", "text", "status", "code"] {
            assert!(keeps("Observation", property, SummaryKind::Text), "{property}");
        }
        for property in ["subject", "valueQuantity", "identifier"] {
            assert!(!keeps("Observation", property, SummaryKind::Text), "{property}");
        }
        assert!(keeps("NoSuchType", "id", SummaryKind::True));
        assert!(!keeps("NoSuchType", "name", SummaryKind::True));
    }
}
