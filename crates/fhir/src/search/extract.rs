//! Extraction of the typed, normalized search values of a resource.

use serde_json::Value;

use super::value::IndexEntry;

/// Every value of every supported parameter of `resource` (its type from `resourceType`);
/// empty for a JSON value that is not a resource of a known type.
pub fn extract(resource: &Value) -> Vec<IndexEntry> {
    let _ = resource;
    Vec::new()
}
