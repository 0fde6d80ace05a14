//! The validation model: the FHIR R4 definitions generated into `model/r4-model.json`
//! (format: the top of `xtask/src/gen_fhir.rs`), embedded in the binary and parsed once,
//! on first use, into lookup tables.
//!
//! A *node* is anything with child elements: a resource, a complex data type, or a
//! backbone element (named by its path, `Patient.contact`). Each node maps every JSON
//! property name it allows (`valueQuantity`, `_birthDate` is looked up as `birthDate`) to
//! its element and, for a choice element, the chosen type.
//!
//! **Invariant:** a node has at most [`ELEMENTS_PER_NODE_MAX`] elements, so the validator
//! can track which are present in one `u128`. Checked when the model loads.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use serde_json::Value;

/// The most elements one node may have (R4's largest, ActivityDefinition, has 54).
pub(crate) const ELEMENTS_PER_NODE_MAX: usize = 128;

const MODEL_JSON: &str = include_str!("../model/r4-model.json");

static MODEL: LazyLock<Model> =
    LazyLock::new(|| Model::from_json(MODEL_JSON).expect("the embedded model/r4-model.json is well formed"));

/// The model, parsed on first use.
pub(crate) fn model() -> &'static Model {
    &MODEL
}

pub(crate) type NodeId = u16;

/// FNV-1a: the keys are short element names and codes, and not chosen to attack the
/// table (a key that is not in the table is rejected after one probe sequence either way).
#[derive(Clone, Copy)]
pub(crate) struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FnvHasher>>;
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<FnvHasher>>;

/// The FHIR primitive types, each checked by hand in `format.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Primitive {
    Base64Binary,
    Boolean,
    Canonical,
    Code,
    Date,
    DateTime,
    Decimal,
    Id,
    Instant,
    Integer,
    Markdown,
    Oid,
    PositiveInt,
    String,
    Time,
    UnsignedInt,
    Uri,
    Url,
    Uuid,
    Xhtml,
}

impl Primitive {
    /// Whether `name` is a FHIR primitive type name.
    pub(crate) fn is_name(name: &str) -> bool {
        Primitive::from_name(name).is_some()
    }

    fn from_name(name: &str) -> Option<Primitive> {
        Some(match name {
            "base64Binary" => Primitive::Base64Binary,
            "boolean" => Primitive::Boolean,
            "canonical" => Primitive::Canonical,
            "code" => Primitive::Code,
            "date" => Primitive::Date,
            "dateTime" => Primitive::DateTime,
            "decimal" => Primitive::Decimal,
            "id" => Primitive::Id,
            "instant" => Primitive::Instant,
            "integer" => Primitive::Integer,
            "markdown" => Primitive::Markdown,
            "oid" => Primitive::Oid,
            "positiveInt" => Primitive::PositiveInt,
            "string" => Primitive::String,
            "time" => Primitive::Time,
            "unsignedInt" => Primitive::UnsignedInt,
            "uri" => Primitive::Uri,
            "url" => Primitive::Url,
            "uuid" => Primitive::Uuid,
            "xhtml" => Primitive::Xhtml,
            _ => return None,
        })
    }
}

/// What one element (or one type of a choice element) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    Primitive(Primitive),
    /// A complex data type or a backbone element.
    Complex(NodeId),
    /// Any concrete resource (`contained`, `Bundle.entry.resource`, …).
    Resource,
}

/// One type an element may hold; a choice element `value[x]` has one per type.
#[derive(Debug)]
pub(crate) struct Variant {
    pub(crate) data_type: DataType,
    /// The FHIR type name, for `ofType(...)` in paths.
    pub(crate) type_name: Box<str>,
    /// The JSON property holding the value: `birthDate`, `valueQuantity`.
    pub(crate) json_name: Box<str>,
    /// The JSON property holding a primitive's id and extensions: `_birthDate`.
    pub(crate) extension_json_name: Box<str>,
}

#[derive(Debug)]
pub(crate) struct Element {
    /// The element name without `[x]`.
    pub(crate) name: Box<str>,
    pub(crate) min: u32,
    /// `max` is `*`: the JSON value is an array.
    pub(crate) many: bool,
    pub(crate) choice: bool,
    pub(crate) variants: Vec<Variant>,
    /// Index into [`Model::value_sets`] of a required binding that can be checked.
    pub(crate) binding: Option<u16>,
    /// Marked `isSummary` in the definition.
    pub(crate) summary: bool,
}

#[derive(Debug)]
pub(crate) struct Node {
    /// The type name or backbone element path (`HumanName`, `Patient.contact`).
    pub(crate) name: Box<str>,
    pub(crate) elements: Vec<Element>,
    /// JSON property name → (element index, variant index).
    properties: FastMap<Box<str>, (u8, u8)>,
    /// Bit i set: element i has `min` ≥ 1.
    pub(crate) required_mask: u128,
}

impl Node {
    /// The element and variant of a JSON property name (without a leading `_`).
    pub(crate) fn property(&self, json_name: &str) -> Option<(&Element, &Variant, usize)> {
        let (element_index, variant_index) = self.properties.get(json_name)?;
        let element = self.elements.get(usize::from(*element_index))?;
        let variant = element.variants.get(usize::from(*variant_index))?;
        Some((element, variant, usize::from(*element_index)))
    }
}

/// An expanded value set: its codes, by code system.
#[derive(Debug)]
pub(crate) struct ValueSet {
    pub(crate) url: Box<str>,
    pub(crate) systems: Vec<(Box<str>, FastSet<Box<str>>)>,
}

impl ValueSet {
    /// Whether `code` is in the value set, whatever its system (for `code` elements).
    pub(crate) fn contains(&self, code: &str) -> bool {
        self.systems.iter().any(|(_, codes)| codes.contains(code))
    }

    /// `None` when the value set does not draw on `system`, else whether `code` is in it.
    pub(crate) fn contains_in_system(&self, system: &str, code: &str) -> Option<bool> {
        let (_, codes) = self.systems.iter().find(|(url, _)| &**url == system)?;
        Some(codes.contains(code))
    }
}

#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) nodes: Vec<Node>,
    /// Concrete resource type → its node.
    resources: FastMap<Box<str>, NodeId>,
    /// Concrete resource types, sorted.
    pub(crate) resource_names: Vec<Box<str>>,
    /// Abstract resource types (`Resource`, `DomainResource`).
    abstract_resource_names: Vec<Box<str>>,
    pub(crate) value_sets: Vec<ValueSet>,
    /// The node of `Element`: what a primitive's `_name` object holds.
    pub(crate) element_node: NodeId,
    pub(crate) reference_node: NodeId,
    pub(crate) coding_node: NodeId,
    pub(crate) codeable_concept_node: NodeId,
    /// Resource type → JSON paths (split on `.`) to its patient compartment references.
    pub(crate) compartment: FastMap<Box<str>, Vec<Vec<Box<str>>>>,
}

impl Model {
    pub(crate) fn resource_node(&self, resource_type: &str) -> Option<NodeId> {
        self.resources.get(resource_type).copied()
    }

    pub(crate) fn is_abstract_resource(&self, name: &str) -> bool {
        self.abstract_resource_names.iter().any(|abstract_name| &**abstract_name == name)
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        // Node ids are made by `from_json` from the same vector; an id out of range is a
        // programmer error, never input-derived.
        &self.nodes[usize::from(id)]
    }

    fn from_json(text: &str) -> Result<Model, String> {
        let root: Value = serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        let nodes_json = root["nodes"].as_object().ok_or("no nodes")?;
        let node_ids: FastMap<&str, NodeId> = nodes_json
            .keys()
            .enumerate()
            .map(|(index, name)| Ok((name.as_str(), NodeId::try_from(index).map_err(|_| "too many nodes")?)))
            .collect::<Result<_, String>>()?;
        let value_sets_json = root["valueSets"].as_object().ok_or("no valueSets")?;
        let value_set_ids: FastMap<&str, u16> = value_sets_json
            .keys()
            .enumerate()
            .map(|(index, url)| Ok((url.as_str(), u16::try_from(index).map_err(|_| "too many value sets")?)))
            .collect::<Result<_, String>>()?;

        let nodes = nodes_json
            .iter()
            .map(|(name, elements)| parse_node(name, elements, &node_ids, &value_set_ids))
            .collect::<Result<Vec<_>, String>>()?;
        let value_sets =
            value_sets_json.iter().map(|(url, systems)| parse_value_set(url, systems)).collect::<Result<_, _>>()?;

        let mut resource_names: Vec<Box<str>> = strings(&root["resources"])?.into_iter().map(Box::from).collect();
        resource_names.sort();
        let resources = resource_names
            .iter()
            .map(|name| Ok((name.clone(), *node_ids.get(&**name).ok_or_else(|| format!("no node for {name}"))?)))
            .collect::<Result<_, String>>()?;
        let compartment = root["compartment"]
            .as_object()
            .ok_or("no compartment")?
            .iter()
            .map(|(resource_type, paths)| {
                let paths = strings(paths)?.into_iter().map(|path| path.split('.').map(Box::from).collect()).collect();
                Ok((Box::from(resource_type.as_str()), paths))
            })
            .collect::<Result<_, String>>()?;
        let node_id = |name: &str| node_ids.get(name).copied().ok_or_else(|| format!("no node {name}"));
        Ok(Model {
            element_node: node_id("Element")?,
            reference_node: node_id("Reference")?,
            coding_node: node_id("Coding")?,
            codeable_concept_node: node_id("CodeableConcept")?,
            nodes,
            resources,
            resource_names,
            abstract_resource_names: strings(&root["abstractResources"])?.into_iter().map(Box::from).collect(),
            value_sets,
            compartment,
        })
    }
}

fn strings(value: &Value) -> Result<Vec<&str>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("expected an array of strings: {value}"))?
        .iter()
        .map(|item| item.as_str().ok_or_else(|| format!("expected a string: {item}")))
        .collect()
}

fn parse_node(
    name: &str,
    elements_json: &Value,
    node_ids: &FastMap<&str, NodeId>,
    value_set_ids: &FastMap<&str, u16>,
) -> Result<Node, String> {
    let elements_json = elements_json.as_array().ok_or_else(|| format!("{name}: no elements"))?;
    if elements_json.len() > ELEMENTS_PER_NODE_MAX {
        return Err(format!("{name}: {} elements", elements_json.len()));
    }
    let mut elements = Vec::with_capacity(elements_json.len());
    let mut properties = FastMap::default();
    let mut required_mask = 0u128;
    for (element_index, element_json) in elements_json.iter().enumerate() {
        let element = parse_element(name, element_json, node_ids, value_set_ids)?;
        let index = u8::try_from(element_index).map_err(|_| format!("{name}: too many elements"))?;
        for (variant_index, variant) in element.variants.iter().enumerate() {
            let variant_index = u8::try_from(variant_index).map_err(|_| format!("{name}: too many types"))?;
            if properties.insert(variant.json_name.clone(), (index, variant_index)).is_some() {
                return Err(format!("{name}: two elements named {}", variant.json_name));
            }
        }
        if element.min > 0 {
            required_mask |= 1u128 << element_index;
        }
        elements.push(element);
    }
    Ok(Node { name: Box::from(name), elements, properties, required_mask })
}

fn parse_element(
    node_name: &str,
    element_json: &Value,
    node_ids: &FastMap<&str, NodeId>,
    value_set_ids: &FastMap<&str, u16>,
) -> Result<Element, String> {
    let name = element_json["n"].as_str().ok_or_else(|| format!("{node_name}: element without a name"))?;
    let min = u32::try_from(element_json["min"].as_u64().unwrap_or(0)).map_err(|_| format!("{name}: min"))?;
    let many = element_json["max"] == "*";
    let (choice, type_names) = match &element_json["t"] {
        Value::String(type_name) => (false, vec![type_name.as_str()]),
        types @ Value::Array(_) => (true, strings(types)?),
        _ => return Err(format!("{node_name}.{name}: no type")),
    };
    let variants = type_names
        .into_iter()
        .map(|type_name| {
            let data_type = if let Some(primitive) = Primitive::from_name(type_name) {
                DataType::Primitive(primitive)
            } else if type_name == "Resource" {
                DataType::Resource
            } else {
                DataType::Complex(
                    *node_ids.get(type_name).ok_or_else(|| format!("{node_name}.{name}: unknown type {type_name}"))?,
                )
            };
            let json_name = if choice { format!("{name}{}", upper_first(type_name)) } else { name.to_string() };
            Ok(Variant {
                data_type,
                type_name: Box::from(type_name),
                extension_json_name: Box::from(format!("_{json_name}")),
                json_name: Box::from(json_name),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let binding = match element_json["b"].as_str() {
        Some(url) => Some(*value_set_ids.get(url).ok_or_else(|| format!("{node_name}.{name}: no value set {url}"))?),
        None => None,
    };
    let summary = element_json["s"] == 1;
    Ok(Element { name: Box::from(name), min, many, choice, variants, binding, summary })
}

fn parse_value_set(url: &str, systems_json: &Value) -> Result<ValueSet, String> {
    let systems = systems_json
        .as_object()
        .ok_or_else(|| format!("value set {url}: not an object"))?
        .iter()
        .map(|(system, codes)| Ok((Box::from(system.as_str()), strings(codes)?.into_iter().map(Box::from).collect())))
        .collect::<Result<_, String>>()?;
    Ok(ValueSet { url: Box::from(url), systems })
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_model_loads() {
        let model = Model::from_json(MODEL_JSON).expect("loads");
        assert_eq!(model.resource_names.len(), 146);
        let observation = model.node(model.resource_node("Observation").expect("Observation"));
        let (element, variant, _) = observation.property("valueQuantity").expect("valueQuantity");
        assert!(element.choice);
        assert_eq!(&*variant.type_name, "Quantity");
        assert!(model.resource_node("DomainResource").is_none());
    }
}
