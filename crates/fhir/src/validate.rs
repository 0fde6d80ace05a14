//! Validation of one FHIR R4 resource, in its JSON form, against the base specification:
//! the StructureDefinitions of the resources and data types and the required value sets,
//! as generated into `model/r4-model.json`.
//!
//! # What is checked
//!
//! - `resourceType` is present and names a concrete (non-abstract) resource type;
//! - every property is an element of its type: choice elements by type (`valueQuantity`),
//!   a primitive's id and extensions under `_name` (for arrays, `_name` is an array of the
//!   same length, `null` where an entry has none, and a `null` value needs an entry there),
//!   backbone elements, `contentReference` (`Questionnaire.item.item`), data types
//!   recursively, and `contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`
//!   and other `Resource` elements as resources;
//! - at most one type of a choice element is present;
//! - the JSON type of each value (object, array, string, boolean, number);
//! - arrays exactly where the element repeats (`max` is `*`), never elsewhere; no empty
//!   object, array or string, no `null` outside a primitive array;
//! - minimum cardinality (`min` 1), in every object present, backbone elements included;
//! - the lexical form of every primitive, from the specification's regular expressions
//!   (see `format.rs`), dates being real calendar dates; `integer`, `positiveInt` and
//!   `unsignedInt` within 32 bits; numbers are checked on their JSON text, never through `f64`;
//! - codes of required bindings on `code` elements, and on `Coding`/`CodeableConcept`
//!   elements for codings whose `system` is one the value set draws on, where the value set
//!   expands from the definitions (those that do not are listed in `model/README.md`);
//! - `Reference.reference`: `Type/id`, `Type/id/_history/version` (a known resource type),
//!   `Type?query` (a conditional reference, meaningful in a transaction), an absolute URL,
//!   `#id` of a contained resource (or `#` for the container), `urn:uuid:`, `urn:oid:`;
//! - at most [`STRING_BYTES_MAX`] bytes in a primitive string (`base64Binary` excepted: the
//!   request body limit bounds it).
//!
//! # What is not checked
//!
//! FHIRPath invariants (constraints such as `dom-2` or `ele-1`: the validator does not
//! evaluate FHIRPath), profiles and extension definitions (extensions are checked as the
//! `Extension` type only), slicing, extensible and weaker bindings, value sets that need a
//! terminology server, that references resolve or point at an allowed target type, and the
//! content of the XHTML narrative (only that it is a non-empty string).
//!
//! # Paths
//!
//! An issue's `path` is a FHIRPath-like location: the resource type, then `.element` for each
//! property, `[n]` for an array entry, `.ofType(Type)` for the type of a choice element, so
//! `Observation.value.ofType(Quantity).value` and `Patient.name[0].given[1]`. A primitive's
//! `_name` is the same element as `name` (`Patient.birthDate.extension[0].url`). A nested
//! resource continues its container's path with `.ofType(ResourceType)`:
//! `Bundle.entry[0].resource.ofType(Patient).gender`. A property that is not an element is
//! named as it appears in the JSON (`Patient._name`, cut at 64 bytes). When the top-level
//! `resourceType` is missing or unknown, the path is `resourceType`; when the top-level value
//! is not an object, `Resource`.

use std::fmt;

use serde_json::{Map, Value};

use crate::compartment::parse_relative_reference;
use crate::format::{self, IntegerProblem};
use crate::model::{self, DataType, Element, Model, NodeId, Primitive, ValueSet, Variant};

/// The most issues reported for one resource; validation stops when it is reached.
pub const ISSUES_MAX: usize = 100;
/// The deepest nesting of JSON objects followed (serde_json's parser stops at 128 anyway).
pub const DEPTH_MAX: u32 = 120;
/// The longest primitive string value, in bytes (the specification's limit for `string`).
pub const STRING_BYTES_MAX: usize = 1024 * 1024;
/// The most bytes of an invalid value quoted back in an issue's message.
const QUOTED_BYTES_MAX: usize = 64;

/// Checks a resource against the R4 base specification (see the module documentation).
pub fn validate_resource(resource: &Value) -> Result<(), ValidationError> {
    let mut validator = Validator { model: model::model(), issues: Vec::new() };
    validator.resource(resource, None, 0);
    if validator.issues.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { issues: validator.issues })
    }
}

/// Whether `name` is a concrete (non-abstract) R4 resource type.
pub fn is_resource_type(name: &str) -> bool {
    model::model().resource_node(name).is_some()
}

/// The concrete R4 resource types, sorted.
pub fn resource_types() -> impl Iterator<Item = &'static str> {
    model::model().resource_names.iter().map(|name| &**name)
}

/// Whether `id` is a valid resource id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    format::is_id(id)
}

/// A resource that does not conform; `issues` is never empty.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid resource: {}", summary(.issues))]
pub struct ValidationError {
    pub issues: Vec<ValidationIssue>,
}

/// One reason a resource does not conform.
#[derive(Debug, Clone)]
pub struct ValidationIssue {
    /// Where, as described in the module documentation.
    pub path: String,
    pub message: String,
    pub kind: IssueKind,
}

/// The kind of an issue; each maps to an `OperationOutcome.issue.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// `structure`: unknown element or resource type, wrong JSON type, an array where a
    /// single value belongs or the reverse, an empty or `null` value.
    Structure,
    /// `required`: a required element is missing.
    Required,
    /// `value`: a primitive value that is not of its type's form, or out of range.
    Value,
    /// `code-invalid`: a code not in the required value set.
    CodeInvalid,
    /// `too-long`: a string longer than [`STRING_BYTES_MAX`], an id longer than 64.
    TooLong,
}

impl IssueKind {
    /// The `OperationOutcome.issue.code` (IssueType) of this kind.
    pub fn code(self) -> &'static str {
        match self {
            IssueKind::Structure => "structure",
            IssueKind::Required => "required",
            IssueKind::Value => "value",
            IssueKind::CodeInvalid => "code-invalid",
            IssueKind::TooLong => "too-long",
        }
    }
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.path, self.message)
    }
}

fn summary(issues: &[ValidationIssue]) -> String {
    match issues {
        [] => "no issues".to_string(),
        [only] => only.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

/// One step of a path; paths live on the stack and become strings only for an issue.
#[derive(Clone, Copy)]
enum Segment<'a> {
    Resource(&'a str),
    Field(&'a str),
    Index(usize),
    OfType(&'a str),
}

#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

impl<'a> Path<'a> {
    fn child(&'a self, segment: Segment<'a>) -> Path<'a> {
        Path { parent: Some(self), segment }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        if let Some(parent) = self.parent {
            parent.write(out);
        }
        let first = self.parent.is_none();
        match self.segment {
            Segment::Resource(name) if first => out.push_str(name),
            Segment::Resource(name) | Segment::OfType(name) => {
                out.push_str(".ofType(");
                out.push_str(name);
                out.push(')');
            }
            Segment::Field(name) => {
                if !first {
                    out.push('.');
                }
                out.push_str(name);
            }
            Segment::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
        }
    }
}

struct Validator<'m> {
    model: &'m Model,
    issues: Vec<ValidationIssue>,
}

impl<'m> Validator<'m> {
    fn full(&self) -> bool {
        self.issues.len() >= ISSUES_MAX
    }

    fn issue(&mut self, path: &Path<'_>, kind: IssueKind, message: impl Into<String>) {
        if !self.full() {
            self.issues.push(ValidationIssue { path: path.render(), message: message.into(), kind });
        }
    }

    /// A resource: at the top (`parent` is `None`) or nested in an element of type `Resource`.
    fn resource(&mut self, value: &Value, parent: Option<&Path<'_>>, depth: u32) {
        let type_path = Path { parent, segment: Segment::Field("resourceType") };
        let Some(object) = value.as_object() else {
            let path = Path { parent, segment: Segment::Resource("Resource") };
            return self.issue(&path, IssueKind::Structure, "a resource must be a JSON object");
        };
        let resource_type = match object.get("resourceType") {
            Some(Value::String(resource_type)) => resource_type,
            Some(_) => return self.issue(&type_path, IssueKind::Structure, "resourceType must be a string"),
            None => return self.issue(&type_path, IssueKind::Required, "resourceType is missing"),
        };
        let Some(node) = self.model.resource_node(resource_type) else {
            let message = if self.model.is_abstract_resource(resource_type) {
                format!("{} is not a concrete resource type", quote(resource_type))
            } else {
                format!("unknown resource type {}", quote(resource_type))
            };
            return self.issue(&type_path, IssueKind::Structure, message);
        };
        let path = Path { parent, segment: Segment::Resource(resource_type) };
        self.object(object, node, &path, depth, true);
    }

    /// The properties of one object of the node's type, then its required elements.
    fn object(&mut self, object: &Map<String, Value>, node_id: NodeId, path: &Path<'_>, depth: u32, is_resource: bool) {
        if depth > DEPTH_MAX {
            return self.issue(path, IssueKind::Structure, format!("nested more than {DEPTH_MAX} levels deep"));
        }
        let node = self.model.node(node_id);
        let mut present = 0u128;
        let mut conflicts_reported = 0u128;
        for (key, value) in object {
            if self.full() {
                return;
            }
            if is_resource && key == "resourceType" {
                continue;
            }
            let (json_name, is_extension) = match key.strip_prefix('_') {
                Some(json_name) => (json_name, true),
                None => (key.as_str(), false),
            };
            // Every primitive but xhtml may carry an id and extensions in `_name`.
            let property = node.property(json_name).filter(|(_, variant, _)| {
                !is_extension
                    || matches!(variant.data_type, DataType::Primitive(primitive) if primitive != Primitive::Xhtml)
            });
            let Some((element, variant, index)) = property else {
                let message = format!("unknown element {} in {}", quote(key), node.name);
                self.issue(&path.child(Segment::Field(truncated(key))), IssueKind::Structure, message);
                continue;
            };
            let bit = 1u128 << index;
            if element.choice
                && present & bit != 0
                && conflicts_reported & bit == 0
                && has_choice_conflict(object, element)
            {
                conflicts_reported |= bit;
                let message = format!("only one type of {}[x] may be present", element.name);
                self.issue(&path.child(Segment::Field(&element.name)), IssueKind::Structure, message);
            }
            present |= bit;
            let field_path = path.child(Segment::Field(&element.name));
            let of_type_path = field_path.child(Segment::OfType(&variant.type_name));
            let value_path = if element.choice { &of_type_path } else { &field_path };
            if is_extension {
                self.primitive_extension(object, element, variant, value, value_path, depth);
            } else {
                self.element(object, element, variant, value, value_path, depth);
            }
        }
        let missing = node.required_mask & !present;
        if missing != 0 {
            for (index, element) in node.elements.iter().enumerate() {
                if missing & (1u128 << index) != 0 {
                    let name = if element.choice { format!("{}[x]", element.name) } else { element.name.to_string() };
                    let message = format!("{name} is required in {}", node.name);
                    self.issue(&path.child(Segment::Field(&element.name)), IssueKind::Required, message);
                }
            }
        }
    }

    /// The JSON value of an element's property (`name`, not `_name`).
    fn element(
        &mut self,
        object: &Map<String, Value>,
        element: &Element,
        variant: &Variant,
        value: &Value,
        path: &Path<'_>,
        depth: u32,
    ) {
        if !element.many {
            return match value {
                Value::Array(_) => self.issue(path, IssueKind::Structure, "a single value is expected, not an array"),
                Value::Null => self.issue(path, IssueKind::Structure, "null is not a value (omit the property)"),
                _ => self.value(value, element, variant, path, depth),
            };
        }
        let Value::Array(items) = value else {
            return self.issue(path, IssueKind::Structure, "an array is expected (the element repeats)");
        };
        if items.is_empty() {
            return self.issue(path, IssueKind::Structure, "an array must not be empty (omit the property)");
        }
        if items.len() < element.min as usize {
            let message = format!("at least {} entries are required", element.min);
            self.issue(path, IssueKind::Required, message);
        }
        for (index, item) in items.iter().enumerate() {
            let item_path = path.child(Segment::Index(index));
            if item.is_null() {
                let is_primitive = matches!(variant.data_type, DataType::Primitive(_));
                if !(is_primitive && has_extension_entry(object, variant, index)) {
                    let message = format!("null is only allowed where {} has an entry", variant.extension_json_name);
                    self.issue(&item_path, IssueKind::Structure, message);
                }
                continue;
            }
            self.value(item, element, variant, &item_path, depth);
        }
    }

    /// One value of a variant's type.
    fn value(&mut self, value: &Value, element: &Element, variant: &Variant, path: &Path<'_>, depth: u32) {
        match variant.data_type {
            DataType::Primitive(primitive) => self.primitive(value, primitive, element.binding, path),
            DataType::Complex(node) => {
                let Some(object) = value.as_object() else {
                    let message = format!("a JSON object is expected (a {})", variant.type_name);
                    return self.issue(path, IssueKind::Structure, message);
                };
                if object.is_empty() {
                    return self.issue(path, IssueKind::Structure, "an object must not be empty (omit the property)");
                }
                self.object(object, node, path, depth + 1, false);
                if node == self.model.reference_node {
                    self.reference(object, path);
                }
                if let Some(binding) = element.binding {
                    self.coded(object, node, binding, path);
                }
            }
            DataType::Resource => {
                if !value.is_object() {
                    return self.issue(path, IssueKind::Structure, "a resource (a JSON object) is expected");
                }
                self.resource(value, Some(path), depth + 1);
            }
        }
    }

    fn primitive(&mut self, value: &Value, primitive: Primitive, binding: Option<u16>, path: &Path<'_>) {
        let min = match primitive {
            Primitive::Boolean => {
                if !value.is_boolean() {
                    self.issue(path, IssueKind::Structure, "a JSON boolean is expected");
                }
                return;
            }
            Primitive::Integer => format::INTEGER_MIN,
            Primitive::PositiveInt => 1,
            Primitive::UnsignedInt | Primitive::Decimal => 0,
            _ => {
                let Value::String(text) = value else {
                    return self.issue(path, IssueKind::Structure, "a JSON string is expected");
                };
                return self.string(text, primitive, binding, path);
            }
        };
        let Value::Number(number) = value else {
            return self.issue(path, IssueKind::Structure, "a JSON number is expected");
        };
        // serde_json keeps the number's text (`arbitrary_precision`): check that, not an f64.
        let text = number.as_str();
        if primitive == Primitive::Decimal {
            if !format::is_decimal(text) {
                self.issue(path, IssueKind::Value, format!("{} is not a decimal", quote(text)));
            }
            return;
        }
        match format::integer(text, min) {
            Ok(()) => {}
            Err(IntegerProblem::Syntax) => {
                self.issue(path, IssueKind::Value, format!("{} is not {}", quote(text), integer_kind(primitive)));
            }
            Err(IntegerProblem::Range) => {
                let message = format!("{} is out of range for {}", quote(text), integer_kind(primitive));
                self.issue(path, IssueKind::Value, message);
            }
        }
    }

    fn string(&mut self, text: &str, primitive: Primitive, binding: Option<u16>, path: &Path<'_>) {
        if text.len() > STRING_BYTES_MAX && primitive != Primitive::Base64Binary {
            let message = format!("{} bytes is longer than the limit of {STRING_BYTES_MAX}", text.len());
            return self.issue(path, IssueKind::TooLong, message);
        }
        if text.is_empty() {
            return self.issue(path, IssueKind::Value, "a string must not be empty (omit the property)");
        }
        let valid = match primitive {
            Primitive::String => format::is_string(text),
            Primitive::Markdown => true, // `\s*(\S|\s)*`: anything not empty
            Primitive::Code => format::is_code(text),
            Primitive::Id => format::is_id(text),
            Primitive::Uri | Primitive::Url | Primitive::Canonical => format::is_uri(text),
            Primitive::Oid => format::is_oid(text),
            Primitive::Uuid => format::is_uuid(text),
            Primitive::Base64Binary => format::is_base64(text),
            Primitive::Date => format::is_date(text),
            Primitive::DateTime => format::is_date_time(text),
            Primitive::Instant => format::is_instant(text),
            Primitive::Time => format::is_time(text),
            Primitive::Xhtml => true,
            Primitive::Boolean
            | Primitive::Decimal
            | Primitive::Integer
            | Primitive::PositiveInt
            | Primitive::UnsignedInt => true, // not strings; handled by the caller
        };
        if !valid {
            if primitive == Primitive::Id && text.len() > 64 {
                return self.issue(path, IssueKind::TooLong, "an id has at most 64 characters");
            }
            let message = format!("{} is not a valid {}", quote(text), primitive_name(primitive));
            return self.issue(path, IssueKind::Value, message);
        }
        if let (Primitive::Code, Some(binding)) = (primitive, binding) {
            let value_set = self.value_set(binding);
            if !value_set.contains(text) {
                let message = format!("{} is not a code of the required value set {}", quote(text), value_set.url);
                self.issue(path, IssueKind::CodeInvalid, message);
            }
        }
    }

    fn value_set(&self, binding: u16) -> &'m ValueSet {
        // Binding indexes are made by the model loader from the same vector.
        &self.model.value_sets[usize::from(binding)]
    }

    /// A primitive's `_name`: its id and extensions (an `Element`), or an array of them
    /// (entries `null` where the value has none) aligned with the value array.
    fn primitive_extension(
        &mut self,
        object: &Map<String, Value>,
        element: &Element,
        variant: &Variant,
        value: &Value,
        path: &Path<'_>,
        depth: u32,
    ) {
        let Value::Array(items) = value else {
            return match value {
                Value::Object(extension) if !element.many => self.element_object(extension, path, depth),
                _ if element.many => {
                    let message = format!("{} must be an array (the element repeats)", variant.extension_json_name);
                    self.issue(path, IssueKind::Structure, message)
                }
                _ => {
                    let message = format!("{} must be a JSON object", variant.extension_json_name);
                    self.issue(path, IssueKind::Structure, message)
                }
            };
        };
        if !element.many {
            let message = format!("{} must be a single object, not an array", variant.extension_json_name);
            return self.issue(path, IssueKind::Structure, message);
        }
        if items.is_empty() {
            let message = format!("{} must not be empty (omit the property)", variant.extension_json_name);
            return self.issue(path, IssueKind::Structure, message);
        }
        let values = object.get(&*variant.json_name);
        if let Some(Value::Array(values)) = values {
            if values.len() != items.len() {
                let message = format!(
                    "{} has {} entries but {} has {}: they must align",
                    variant.extension_json_name,
                    items.len(),
                    variant.json_name,
                    values.len()
                );
                self.issue(path, IssueKind::Structure, message);
            }
        }
        for (index, item) in items.iter().enumerate() {
            let item_path = path.child(Segment::Index(index));
            match item {
                // A null in both arrays is reported once, with the value.
                Value::Null if values.is_some() => {}
                Value::Null => {
                    let message = format!("an entry with neither a value in {} nor extensions", variant.json_name);
                    self.issue(&item_path, IssueKind::Structure, message);
                }
                Value::Object(extension) => self.element_object(extension, &item_path, depth),
                _ => self.issue(&item_path, IssueKind::Structure, "a JSON object or null is expected"),
            }
        }
    }

    fn element_object(&mut self, object: &Map<String, Value>, path: &Path<'_>, depth: u32) {
        if object.is_empty() {
            return self.issue(path, IssueKind::Structure, "an object must not be empty (omit the property)");
        }
        self.object(object, self.model.element_node, path, depth + 1, false);
    }

    fn reference(&mut self, object: &Map<String, Value>, path: &Path<'_>) {
        let Some(Value::String(reference)) = object.get("reference") else { return };
        if reference.is_empty() || reference.len() > STRING_BYTES_MAX {
            return; // already reported as a string
        }
        if let Some(problem) = reference_problem(reference) {
            self.issue(&path.child(Segment::Field("reference")), IssueKind::Value, problem);
        }
    }

    /// Required-binding codes of a `Coding` or a `CodeableConcept`'s codings.
    fn coded(&mut self, object: &Map<String, Value>, node: NodeId, binding: u16, path: &Path<'_>) {
        let value_set = self.value_set(binding);
        if node == self.model.coding_node {
            self.coding(object, value_set, path);
        } else if node == self.model.codeable_concept_node {
            let Some(Value::Array(codings)) = object.get("coding") else { return };
            let codings_path = path.child(Segment::Field("coding"));
            for (index, coding) in codings.iter().enumerate() {
                if let Value::Object(coding) = coding {
                    self.coding(coding, value_set, &codings_path.child(Segment::Index(index)));
                }
            }
        }
    }

    fn coding(&mut self, coding: &Map<String, Value>, value_set: &ValueSet, path: &Path<'_>) {
        let (Some(Value::String(system)), Some(Value::String(code))) = (coding.get("system"), coding.get("code"))
        else {
            return;
        };
        if value_set.contains_in_system(system, code) == Some(false) {
            let message =
                format!("{} is not a code of {system} in the required value set {}", quote(code), value_set.url);
            self.issue(&path.child(Segment::Field("code")), IssueKind::CodeInvalid, message);
        }
    }
}

/// Whether the object holds properties of more than one type of a choice element.
fn has_choice_conflict(object: &Map<String, Value>, element: &Element) -> bool {
    let mut seen = None;
    for variant in &element.variants {
        if object.contains_key(&*variant.json_name) || object.contains_key(&*variant.extension_json_name) {
            if seen.is_some() {
                return true;
            }
            seen = Some(&variant.json_name);
        }
    }
    false
}

/// Whether `_name[index]` holds an object, which a `null` in `name[index]` needs.
fn has_extension_entry(object: &Map<String, Value>, variant: &Variant, index: usize) -> bool {
    match object.get(&*variant.extension_json_name) {
        Some(Value::Array(entries)) => entries.get(index).is_some_and(Value::is_object),
        _ => false,
    }
}

/// Why a `Reference.reference` is not a valid literal reference, or `None` if it is.
fn reference_problem(reference: &str) -> Option<String> {
    if let Some(fragment) = reference.strip_prefix('#') {
        return (!fragment.is_empty() && !format::is_id(fragment))
            .then(|| format!("{} is not `#` and the id of a contained resource", quote(reference)));
    }
    if reference.starts_with("urn:uuid:") {
        return (!format::is_uuid(reference)).then(|| format!("{} is not a valid urn:uuid:", quote(reference)));
    }
    if reference.starts_with("urn:oid:") {
        return (!format::is_oid(reference)).then(|| format!("{} is not a valid urn:oid:", quote(reference)));
    }
    if let Some((scheme, rest)) = reference.split_once("://") {
        let is_scheme = scheme.bytes().next().is_some_and(|first| first.is_ascii_alphabetic())
            && scheme.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'));
        if is_scheme {
            let valid = !rest.is_empty() && format::is_uri(reference);
            return (!valid).then(|| format!("{} is not a valid absolute URL", quote(reference)));
        }
    }
    let (resource_type, _) = reference.split_once(['/', '?']).unwrap_or((reference, ""));
    if !is_resource_type(resource_type) {
        return Some(format!(
            "{} is not a reference: expected Type/id with a known resource type, an absolute URL, #id, urn:uuid: or urn:oid:",
            quote(reference)
        ));
    }
    if let Some((_, query)) = reference.split_once('?') {
        let valid = !query.is_empty() && !resource_type.contains('/') && format::is_uri(reference);
        return (!valid).then(|| format!("{} is not a valid conditional reference", quote(reference)));
    }
    if parse_relative_reference(reference).is_some() {
        return None;
    }
    Some(format!("{} is not Type/id or Type/id/_history/version with valid ids", quote(reference)))
}

/// A value quoted for a message, cut at [`QUOTED_BYTES_MAX`] bytes.
fn quote(text: &str) -> String {
    let cut = truncated(text);
    if cut.len() == text.len() {
        format!("'{text}'")
    } else {
        format!("'{cut}…'")
    }
}

/// At most [`QUOTED_BYTES_MAX`] bytes of `text`, cut at a character boundary.
fn truncated(text: &str) -> &str {
    let mut end = text.len().min(QUOTED_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn integer_kind(primitive: Primitive) -> &'static str {
    match primitive {
        Primitive::PositiveInt => "a positiveInt (1 to 2147483647)",
        Primitive::UnsignedInt => "an unsignedInt (0 to 2147483647)",
        _ => "an integer (-2147483648 to 2147483647)",
    }
}

fn primitive_name(primitive: Primitive) -> &'static str {
    match primitive {
        Primitive::Base64Binary => "base64Binary",
        Primitive::Boolean => "boolean",
        Primitive::Canonical => "canonical",
        Primitive::Code => "code",
        Primitive::Date => "date",
        Primitive::DateTime => "dateTime",
        Primitive::Decimal => "decimal",
        Primitive::Id => "id",
        Primitive::Instant => "instant",
        Primitive::Integer => "integer",
        Primitive::Markdown => "markdown",
        Primitive::Oid => "oid",
        Primitive::PositiveInt => "positiveInt",
        Primitive::String => "string",
        Primitive::Time => "time",
        Primitive::UnsignedInt => "unsignedInt",
        Primitive::Uri => "uri",
        Primitive::Url => "url",
        Primitive::Uuid => "uuid",
        Primitive::Xhtml => "xhtml",
    }
}
