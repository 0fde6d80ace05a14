//! `gen-fhir`: turns the official HL7 FHIR R4 (4.0.1) definitions into the compact model
//! that `medvault-fhir` embeds and validates against.
//!
//! Inputs (all from the definitions directory given on the command line):
//! `profiles-types.json` and `profiles-resources.json` (StructureDefinition snapshots),
//! `valuesets.json` (ValueSets and CodeSystems, for required bindings),
//! `compartment-patient.json` and `search-parameters.json` (the patient compartment).
//!
//! Output: `r4-model.json`, one JSON object, one line per entry of each table:
//! ```text
//! {"fhirVersion":"4.0.1",
//! "resources":[concrete resource type names, sorted],
//! "abstractResources":[abstract resource type names, sorted],
//! "nodes":{ "<type name or backbone path>": [element, ...], ... },
//! "valueSets":{ "<value set url>": {"<code system url>": ["code", ...], ...}, ... },
//! "compartment":{ "<resource type>": ["dotted.json.path", ...], ... }}
//! ```
//! An element is `{"n": name, "min": 1?, "max": "*"?, "t": type, "b": value set url?, "s": 1?}`:
//! `t` is one type name, or an array of type names for a choice element `name[x]`
//! (whose JSON properties are `name` + the type name with its first letter in upper case).
//! A type name is a FHIR primitive type, `Resource` (any resource), or the name of another
//! node: a complex data type, or the path of a backbone element (its own children, or the
//! target of a `contentReference`). `min` is omitted when 0, `max` when 1. `s` is there when
//! the definition marks the element `isSummary` (what `_summary=true` returns).
//! The README beside it lists what could not be carried over.
//!
//! Second output: `r4-search-parameters.json`, the search-parameter table (format version 1,
//! described in `docs/format/search-parameters.md`), one line per resource type:
//! ```text
//! {"formatVersion":1,"fhirVersion":"4.0.1",
//! "params":{ "<type>": [{"code":..,"type":..,"expression":..,"targets":[..],"url":..}, ...], ... },
//! "unsupported":{ "<type>": [{"code":..,"type":..,"reason":..}, ...], ... }}
//! ```
//! `<type>` is a concrete resource type, or `Resource` / `DomainResource` for the parameters
//! every resource (every domain resource) has. Only parameters of type token, reference,
//! string, date, uri, number and quantity are in `params`, with their expression restricted
//! to the type; composite and special ones, and any without an expression, are `unsupported`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// The FHIR primitive types: validated by hand-written checks in `medvault-fhir`, so they
/// are not nodes of the model.
const PRIMITIVE_TYPES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "xhtml",
];

/// Types whose required bindings the validator checks.
const CODED_TYPES: &[&str] = &["code", "Coding", "CodeableConcept"];

const FHIR_TYPE_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";

struct Options {
    definitions_dir: PathBuf,
    out_dir: PathBuf,
}

/// Runs the task with the arguments after `gen-fhir`.
pub fn run(arguments: &[String]) -> Result<()> {
    let options = parse_options(arguments)?;
    let dir = &options.definitions_dir;
    let types_bundle = read_json(&dir.join("profiles-types.json"))?;
    let resources_bundle = read_json(&dir.join("profiles-resources.json"))?;
    let valuesets_bundle = read_json(&dir.join("valuesets.json"))?;
    let compartment_definition = read_json(&dir.join("compartment-patient.json"))?;
    let search_bundle = read_json(&dir.join("search-parameters.json"))?;

    let mut model = Model::default();
    for structure in bundle_resources(&types_bundle, "StructureDefinition") {
        model.add_structure(structure)?;
    }
    for structure in bundle_resources(&resources_bundle, "StructureDefinition") {
        model.add_structure(structure)?;
    }
    model.check_type_references()?;

    let terminology = Terminology::new(&valuesets_bundle);
    let bindings = model.expand_bindings(&terminology);
    let compartment = compartment_table(&model, &compartment_definition, &search_bundle)?;
    let search_table = search_table(&model, &search_bundle)?;

    std::fs::create_dir_all(&options.out_dir).with_context(|| format!("creating {}", options.out_dir.display()))?;
    let out_dir = std::fs::canonicalize(&options.out_dir)?;
    let model_path = out_dir.join("r4-model.json");
    let model_text = render_model(&model, &bindings, &compartment);
    std::fs::write(&model_path, &model_text).with_context(|| format!("writing {}", model_path.display()))?;
    let search_path = out_dir.join("r4-search-parameters.json");
    let search_text = render_search_table(&search_table);
    std::fs::write(&search_path, &search_text).with_context(|| format!("writing {}", search_path.display()))?;
    let readme_path = out_dir.join("README.md");
    std::fs::write(&readme_path, render_readme(&model, &bindings, &compartment, &search_table))
        .with_context(|| format!("writing {}", readme_path.display()))?;
    println!(
        "wrote {} ({} bytes: {} supported parameters, {} unsupported)",
        search_path.display(),
        search_text.len(),
        search_table.supported_count(),
        search_table.unsupported_count()
    );
    println!(
        "wrote {} ({} bytes: {} nodes, {} resource types, {} value sets, {} compartment types)",
        model_path.display(),
        model_text.len(),
        model.nodes.len(),
        model.resources.len(),
        bindings.expanded.len(),
        compartment.paths.len()
    );
    Ok(())
}

fn parse_options(arguments: &[String]) -> Result<Options> {
    let mut definitions_dir = None;
    let mut out_dir = None;
    let mut rest = arguments.iter();
    while let Some(argument) = rest.next() {
        let value = rest.next().ok_or_else(|| anyhow!("{argument} needs a value"))?;
        match argument.as_str() {
            "--definitions" => definitions_dir = Some(PathBuf::from(value)),
            "--out" => out_dir = Some(PathBuf::from(value)),
            _ => bail!("unknown argument {argument}; {}", crate::USAGE),
        }
    }
    let definitions_dir = definitions_dir.ok_or_else(|| anyhow!("--definitions DIR is required"))?;
    // The default output is relative to this crate, so the task works from any directory.
    let out_dir = out_dir.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("crates/fhir/model"));
    Ok(Options { definitions_dir, out_dir })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The resources of type `resource_type` in a Bundle's entries.
fn bundle_resources<'a>(bundle: &'a Value, resource_type: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| &entry["resource"])
        .filter(move |resource| resource["resourceType"] == resource_type)
}

fn str_field<'a>(value: &'a Value, field: &str) -> Result<&'a str> {
    value[field].as_str().ok_or_else(|| anyhow!("missing string `{field}` in {}", short(value)))
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    text.chars().take(200).collect()
}

// ---------------------------------------------------------------------------------------
// Structure definitions → nodes

#[derive(Default)]
struct Model {
    /// Node name → elements, in snapshot order.
    nodes: BTreeMap<String, Vec<Element>>,
    /// Concrete resource type names.
    resources: BTreeSet<String>,
    /// Abstract resource type names (`Resource`, `DomainResource`).
    abstract_resources: BTreeSet<String>,
    /// Required bindings seen, value set url → element paths using it.
    required_bindings: BTreeMap<String, Vec<String>>,
    /// Required bindings on elements of a type the validator does not check codes for.
    uncoded_bindings: Vec<String>,
}

struct Element {
    name: String,
    path: String,
    min: u64,
    many: bool,
    /// Several entries only for a choice element.
    types: Vec<String>,
    choice: bool,
    binding: Option<String>,
    /// `isSummary` in the definition.
    summary: bool,
}

impl Model {
    fn add_structure(&mut self, structure: &Value) -> Result<()> {
        let kind = str_field(structure, "kind")?;
        let derivation = structure["derivation"].as_str();
        let abstract_ = structure["abstract"].as_bool() == Some(true);
        let type_name = str_field(structure, "type")?;
        let wanted = match kind {
            "resource" => true,
            // `Element` is the only definition without a derivation; constraints
            // (SimpleQuantity, MoneyQuantity) are profiles on Quantity, not types.
            "complex-type" => derivation != Some("constraint"),
            _ => false, // primitive types are checked by hand; logical models are not data
        };
        if !wanted {
            return Ok(());
        }
        if kind == "resource" {
            let names = if abstract_ { &mut self.abstract_resources } else { &mut self.resources };
            names.insert(type_name.to_string());
        }
        let elements =
            structure["snapshot"]["element"].as_array().ok_or_else(|| anyhow!("{type_name} has no snapshot"))?;
        let paths: HashSet<&str> = elements.iter().filter_map(|element| element["path"].as_str()).collect();
        let has_children = |path: &str| {
            let prefix = format!("{path}.");
            paths.iter().any(|other| other.starts_with(&prefix))
        };
        for element in elements {
            let path = str_field(element, "path")?;
            let Some((parent, name)) = path.rsplit_once('.') else { continue }; // the root
            if element["max"] == "0" {
                continue;
            }
            if element.get("sliceName").is_some() {
                bail!("{path}: slices are not expected in the base definitions");
            }
            let parsed = parse_element(element, path, name, kind == "resource" && parent == type_name)?;
            let parsed = if element.get("contentReference").is_none() && has_children(path) {
                Element { types: vec![path.to_string()], ..parsed }
            } else {
                parsed
            };
            if let Some(binding) = required_binding(element) {
                if parsed.types.iter().any(|t| CODED_TYPES.contains(&t.as_str())) {
                    self.required_bindings.entry(binding).or_default().push(path.to_string());
                } else {
                    self.uncoded_bindings.push(format!("{path} ({binding})"));
                }
            }
            let node = self.nodes.entry(parent.to_string()).or_default();
            if node.iter().any(|existing| existing.name == parsed.name) {
                bail!("{path}: duplicate element");
            }
            node.push(parsed);
        }
        Ok(())
    }

    /// Every type named by an element is a primitive, `Resource`, or a node.
    fn check_type_references(&self) -> Result<()> {
        for element in self.nodes.values().flatten() {
            for type_name in &element.types {
                let known = PRIMITIVE_TYPES.contains(&type_name.as_str())
                    || type_name == "Resource"
                    || self.nodes.contains_key(type_name);
                if !known {
                    bail!("{}: unknown type {type_name}", element.path);
                }
            }
        }
        for required in ["Element", "Extension", "Reference", "Coding", "CodeableConcept"] {
            if !self.nodes.contains_key(required) {
                bail!("the definitions lack the type {required}");
            }
        }
        Ok(())
    }

    fn element(&self, node: &str, name: &str) -> Option<&Element> {
        self.nodes.get(node)?.iter().find(|element| element.name == name)
    }

    /// Expands every required value set; elements keep a binding only when it expanded.
    fn expand_bindings(&mut self, terminology: &Terminology) -> Bindings {
        let mut bindings = Bindings::default();
        for (url, paths) in &self.required_bindings {
            match terminology.expand(url, &mut Vec::new()) {
                Ok(codes) => {
                    bindings.expanded.insert(url.clone(), codes);
                }
                Err(reason) => {
                    bindings.skipped.insert(url.clone(), (reason, paths.clone()));
                }
            }
        }
        for element in self.nodes.values_mut().flatten() {
            element.binding = None;
        }
        for (url, paths) in &self.required_bindings {
            if !bindings.expanded.contains_key(url) {
                continue;
            }
            for path in paths {
                if let Some((parent, name)) = path.rsplit_once('.') {
                    let name = name.strip_suffix("[x]").unwrap_or(name);
                    if let Some(element) =
                        self.nodes.get_mut(parent).and_then(|node| node.iter_mut().find(|e| e.name == name))
                    {
                        element.binding = Some(url.clone());
                    }
                }
            }
        }
        bindings
    }
}

fn parse_element(element: &Value, path: &str, name: &str, resource_root: bool) -> Result<Element> {
    let min = element["min"].as_u64().ok_or_else(|| anyhow!("{path}: no min"))?;
    let many = match str_field(element, "max")? {
        "1" => false,
        "*" => true,
        other => bail!("{path}: unexpected max {other}"),
    };
    let (name, choice) = match name.strip_suffix("[x]") {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    let types = if let Some(reference) = element["contentReference"].as_str() {
        let target = reference.strip_prefix('#').ok_or_else(|| anyhow!("{path}: contentReference {reference}"))?;
        vec![target.to_string()]
    } else if resource_root && name == "id" {
        // The snapshot says System.String for Resource.id; the specification says `id`.
        vec!["id".to_string()]
    } else {
        let types = element["type"].as_array().ok_or_else(|| anyhow!("{path}: no type"))?;
        types.iter().map(|t| type_code(t, path)).collect::<Result<Vec<_>>>()?
    };
    if types.is_empty() || (types.len() > 1 && !choice) {
        bail!("{path}: {} types", types.len());
    }
    let summary = element["isSummary"].as_bool() == Some(true);
    Ok(Element { name: name.to_string(), path: path.to_string(), min, many, types, choice, binding: None, summary })
}

/// The FHIR type of one `ElementDefinition.type`; FHIRPath system types (used for `id`
/// and `Extension.url`) carry their FHIR type in an extension.
fn type_code(element_type: &Value, path: &str) -> Result<String> {
    let code = str_field(element_type, "code")?;
    if !code.starts_with("http://hl7.org/fhirpath/System.") {
        return Ok(code.to_string());
    }
    element_type["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|extension| extension["url"] == FHIR_TYPE_EXTENSION)
        .and_then(|extension| extension["valueUrl"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{path}: system type {code} without a FHIR type"))
}

fn required_binding(element: &Value) -> Option<String> {
    let binding = element.get("binding")?;
    if binding["strength"] != "required" {
        return None;
    }
    let url = binding["valueSet"].as_str()?;
    Some(url.split('|').next().unwrap_or(url).to_string())
}

// ---------------------------------------------------------------------------------------
// Value sets

#[derive(Default)]
struct Bindings {
    /// Value set url → code system url → codes.
    expanded: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Value set url → (why it was not expanded, the elements bound to it).
    skipped: BTreeMap<String, (String, Vec<String>)>,
}

struct Terminology<'a> {
    value_sets: HashMap<&'a str, &'a Value>,
    code_systems: HashMap<&'a str, &'a Value>,
}

type Expansion = BTreeMap<String, Vec<String>>;

impl<'a> Terminology<'a> {
    fn new(bundle: &'a Value) -> Self {
        let by_url = |resource_type| {
            bundle_resources(bundle, resource_type)
                .filter_map(|resource| Some((resource["url"].as_str()?, resource)))
                .collect::<HashMap<_, _>>()
        };
        Terminology { value_sets: by_url("ValueSet"), code_systems: by_url("CodeSystem") }
    }

    /// All codes of a value set, by code system; `Err` says why it cannot be expanded.
    fn expand(&self, url: &str, visiting: &mut Vec<String>) -> Result<Expansion, String> {
        if visiting.iter().any(|seen| seen == url) {
            return Err(format!("includes itself through {}", visiting.join(" → ")));
        }
        let value_set = self.value_sets.get(url).ok_or("value set not in valuesets.json")?;
        let compose = value_set.get("compose").ok_or("no compose")?;
        visiting.push(url.to_string());
        let mut expansion = Expansion::new();
        for include in compose["include"].as_array().into_iter().flatten() {
            for (system, codes) in self.expand_include(include, visiting)? {
                let target = expansion.entry(system).or_default();
                for code in codes {
                    if !target.contains(&code) {
                        target.push(code);
                    }
                }
            }
        }
        for exclude in compose["exclude"].as_array().into_iter().flatten() {
            let system = exclude["system"].as_str().ok_or("exclude without a system")?;
            let concepts = exclude["concept"].as_array().ok_or("exclude of a whole system or by filter")?;
            if let Some(codes) = expansion.get_mut(system) {
                let excluded: HashSet<&str> = concepts.iter().filter_map(|c| c["code"].as_str()).collect();
                codes.retain(|code| !excluded.contains(code.as_str()));
            }
        }
        visiting.pop();
        if expansion.values().all(Vec::is_empty) {
            return Err("expands to no codes".to_string());
        }
        Ok(expansion)
    }

    fn expand_include(&self, include: &Value, visiting: &mut Vec<String>) -> Result<Expansion, String> {
        if include.get("filter").is_some() {
            return Err(format!("filter on {}", include["system"].as_str().unwrap_or("?")));
        }
        let mut expansion = Expansion::new();
        if let Some(value_sets) = include["valueSet"].as_array() {
            if include.get("system").is_some() {
                return Err("include of a system intersected with value sets".to_string());
            }
            for url in value_sets.iter().filter_map(Value::as_str) {
                let url = url.split('|').next().unwrap_or(url);
                for (system, codes) in self.expand(url, visiting)? {
                    expansion.entry(system).or_default().extend(codes);
                }
            }
            return Ok(expansion);
        }
        let system = include["system"].as_str().ok_or("include without system or value set")?;
        let codes = if let Some(concepts) = include["concept"].as_array() {
            concepts.iter().filter_map(|concept| concept["code"].as_str().map(str::to_string)).collect()
        } else {
            let code_system =
                self.code_systems.get(system).ok_or_else(|| format!("all of {system}, not in valuesets.json"))?;
            if code_system["content"] != "complete" {
                return Err(format!("all of {system}, whose content is {}", code_system["content"]));
            }
            let mut codes = Vec::new();
            collect_concepts(&code_system["concept"], &mut codes);
            codes
        };
        expansion.insert(system.to_string(), codes);
        Ok(expansion)
    }
}

/// Codes of a CodeSystem's concepts, nested concepts included.
fn collect_concepts(concepts: &Value, codes: &mut Vec<String>) {
    for concept in concepts.as_array().into_iter().flatten() {
        if let Some(code) = concept["code"].as_str() {
            codes.push(code.to_string());
        }
        collect_concepts(&concept["concept"], codes);
    }
}

// ---------------------------------------------------------------------------------------
// Patient compartment

#[derive(Default)]
struct Compartment {
    /// Resource type → JSON property paths to the references, in the definition's order.
    paths: BTreeMap<String, Vec<String>>,
    /// What could not be carried over, with why.
    dropped: Vec<String>,
}

fn compartment_table(model: &Model, definition: &Value, search_bundle: &Value) -> Result<Compartment> {
    let search_parameters: Vec<&Value> = bundle_resources(search_bundle, "SearchParameter").collect();
    let mut compartment = Compartment::default();
    for entry in definition["resource"].as_array().into_iter().flatten() {
        let resource_type = str_field(entry, "code")?;
        // A Patient belongs to its own compartment; `Patient.link` is not followed.
        if resource_type == "Patient" {
            continue;
        }
        let parameters = entry["param"].as_array().map_or(&[][..], Vec::as_slice);
        if parameters.is_empty() {
            continue; // not in the compartment
        }
        let mut paths: Vec<String> = Vec::new();
        for code in parameters.iter().filter_map(Value::as_str) {
            let parameter = search_parameters.iter().find(|parameter| {
                parameter["code"] == code
                    && parameter["base"].as_array().is_some_and(|base| base.iter().any(|b| b == resource_type))
            });
            let Some(parameter) = parameter else {
                compartment.dropped.push(format!("{resource_type} `{code}`: no SearchParameter with this code"));
                continue;
            };
            let expression = str_field(parameter, "expression")?;
            let prefix = format!("{resource_type}.");
            for part in expression.split('|').map(str::trim) {
                let plain = strip_wrappers(part);
                if !plain.starts_with(&prefix) {
                    continue; // another resource type's part of a shared parameter
                }
                match json_path(model, resource_type, &plain) {
                    Ok(path) => {
                        if !paths.contains(&path) {
                            paths.push(path);
                        }
                    }
                    Err(reason) => {
                        compartment.dropped.push(format!("{resource_type} `{code}`: `{part}`: {reason}"));
                    }
                }
            }
        }
        if paths.is_empty() {
            compartment.dropped.push(format!("{resource_type}: no usable parameter"));
        } else {
            compartment.paths.insert(resource_type.to_string(), paths);
        }
    }
    Ok(compartment)
}

/// Removes the wrappers that do not change which element is read: parentheses,
/// `.where(resolve() is Patient)` (the reference's target is checked at run time),
/// ` as Reference`, `.as(Reference)`; `.ofType(Reference)` is kept for `json_path`.
fn strip_wrappers(part: &str) -> String {
    let mut text = part.trim().to_string();
    while text.starts_with('(') && text.ends_with(')') {
        text = text[1..text.len() - 1].trim().to_string();
    }
    for suffix in [".where(resolve() is Patient)", " as Reference", ".as(Reference)"] {
        if let Some(stripped) = text.strip_suffix(suffix) {
            text = stripped.trim().to_string();
        }
    }
    text
}

/// The JSON property path (`participant.actor`) for a FHIRPath like
/// `Appointment.participant.actor`, checked against the model: it must end at a Reference.
fn json_path(model: &Model, resource_type: &str, expression: &str) -> Result<String, String> {
    let mut segments: Vec<&str> = expression.split('.').skip(1).collect();
    let mut wanted_type = None;
    if let Some(last) = segments.last() {
        if let Some(inner) = last.strip_prefix("ofType(").and_then(|rest| rest.strip_suffix(')')) {
            wanted_type = Some(inner.to_string());
            segments.pop();
        }
    }
    let mut node = resource_type.to_string();
    let mut names = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        if segment.is_empty() || !segment.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("`{segment}` is not a plain element name"));
        }
        let element = model.element(&node, segment).ok_or_else(|| format!("no element {node}.{segment}"))?;
        let last = index + 1 == segments.len();
        let type_name = if element.choice {
            let wanted = wanted_type.clone().filter(|_| last).ok_or("a choice element without ofType")?;
            if !element.types.contains(&wanted) {
                return Err(format!("{node}.{segment} has no type {wanted}"));
            }
            names.push(format!("{segment}{}", upper_first(&wanted)));
            wanted
        } else {
            names.push(segment.to_string());
            element.types[0].clone()
        };
        if last {
            if type_name != "Reference" {
                return Err(format!("ends at a {type_name}, not a Reference"));
            }
            return Ok(names.join("."));
        }
        node = type_name;
    }
    Err("empty path".to_string())
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Output

fn render_model(model: &Model, bindings: &Bindings, compartment: &Compartment) -> String {
    let json = |value: Value| value.to_string();
    let mut out = String::from("{\"fhirVersion\":\"4.0.1\",\n\"resources\":");
    out.push_str(&json(Value::from(model.resources.iter().cloned().collect::<Vec<_>>())));
    out.push_str(",\n\"abstractResources\":");
    out.push_str(&json(Value::from(model.abstract_resources.iter().cloned().collect::<Vec<_>>())));
    out.push_str(",\n\"nodes\":{");
    for (index, (name, elements)) in model.nodes.iter().enumerate() {
        let elements: Vec<Value> = elements.iter().map(element_json).collect();
        let separator = if index == 0 { "\n" } else { ",\n" };
        let _ = write!(out, "{separator}{}:{}", json(Value::from(name.as_str())), json(Value::from(elements)));
    }
    out.push_str("},\n\"valueSets\":{");
    for (index, (url, systems)) in bindings.expanded.iter().enumerate() {
        let mut object = serde_json::Map::new();
        for (system, codes) in systems {
            object.insert(system.clone(), Value::from(codes.clone()));
        }
        let separator = if index == 0 { "\n" } else { ",\n" };
        let _ = write!(out, "{separator}{}:{}", json(Value::from(url.as_str())), json(Value::Object(object)));
    }
    out.push_str("},\n\"compartment\":{");
    for (index, (resource_type, paths)) in compartment.paths.iter().enumerate() {
        let separator = if index == 0 { "\n" } else { ",\n" };
        let _ = write!(
            out,
            "{separator}{}:{}",
            json(Value::from(resource_type.as_str())),
            json(Value::from(paths.clone()))
        );
    }
    out.push_str("}}\n");
    out
}

fn element_json(element: &Element) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("n".into(), Value::from(element.name.as_str()));
    if element.min > 0 {
        object.insert("min".into(), Value::from(element.min));
    }
    if element.many {
        object.insert("max".into(), Value::from("*"));
    }
    let types =
        if element.choice { Value::from(element.types.clone()) } else { Value::from(element.types[0].as_str()) };
    object.insert("t".into(), types);
    if let Some(binding) = &element.binding {
        object.insert("b".into(), Value::from(binding.as_str()));
    }
    if element.summary {
        object.insert("s".into(), Value::from(1));
    }
    Value::Object(object)
}

fn render_readme(model: &Model, bindings: &Bindings, compartment: &Compartment, search_table: &SearchTable) -> String {
    let mut out = String::new();
    out.push_str(
        "# FHIR R4 validation model\n\n\
         `r4-model.json` is **generated**; do not edit it by hand. It is derived from the HL7 FHIR R4\n\
         4.0.1 definitions (the npm package `hl7.fhir.r4.examples@4.0.1`: `profiles-types.json`,\n\
         `profiles-resources.json`, `valuesets.json`, `compartment-patient.json`,\n\
         `search-parameters.json`), published by HL7 under CC0-1.0 (public domain dedication).\n\
         So is `r4-search-parameters.json`, the search-parameter table derived from\n\
         `search-parameters.json` (its format: `docs/format/search-parameters.md`).\n\n\
         Regenerate both from the workspace root with the directory holding those files:\n\n\
         ```sh\n\
         cargo run -p xtask -- gen-fhir --definitions /path/to/fhir/r4\n\
         ```\n\n\
         The format is described at the top of `xtask/src/gen_fhir.rs`; `crates/fhir/src/model.rs`\n\
         loads it. Neither the build nor the tests read the definitions themselves.\n\n",
    );
    let _ = writeln!(
        out,
        "Contents: {} nodes (data types, resources and their backbone elements), {} concrete resource\n\
         types, {} expanded required value sets, the patient compartment for {} resource types.\n",
        model.nodes.len(),
        model.resources.len(),
        bindings.expanded.len(),
        compartment.paths.len()
    );
    out.push_str(
        "## Required bindings that are not checked\n\n\
         Codes are checked for every required binding on a `code`, `Coding` or `CodeableConcept`\n\
         element whose value set expands completely from `valuesets.json` (explicit code lists and\n\
         whole code systems defined there). These value sets could not be expanded, so elements\n\
         bound to them accept any syntactically valid code:\n\n\
         | value set | why | bound elements |\n| --- | --- | --- |\n",
    );
    for (url, (reason, paths)) in &bindings.skipped {
        let _ = writeln!(out, "| {url} | {reason} | {} |", paths.join(", "));
    }
    if !model.uncoded_bindings.is_empty() {
        let _ = writeln!(
            out,
            "\nRequired bindings on elements of other types (not checked): {}",
            model.uncoded_bindings.join(", ")
        );
    }
    out.push_str(
        "\n## Patient compartment\n\n\
         `compartment` maps each resource type of the Patient CompartmentDefinition to the JSON paths\n\
         of its compartment parameters, in the definition's order. Each parameter's SearchParameter\n\
         expression is split on `|`; the parts for the type are kept with\n\
         `.where(resolve() is Patient)` and `as Reference` removed (the target type is checked on the\n\
         reference itself: only `Patient/{id}` counts). A Patient is in its own compartment\n\
         (`Patient.link` is not followed).\n\n",
    );
    if compartment.dropped.is_empty() {
        out.push_str("Every parameter's expression was carried over; nothing was dropped.\n");
    } else {
        out.push_str("Dropped:\n\n");
        for dropped in &compartment.dropped {
            let _ = writeln!(out, "- {dropped}");
        }
    }
    render_search_readme(&mut out, search_table);
    out
}

// ---------------------------------------------------------------------------------------
// Search parameters

/// The search parameter types the server evaluates; the others are listed as unsupported.
const SEARCH_TYPES: &[&str] = &["token", "reference", "string", "date", "uri", "number", "quantity"];

/// The pseudo-types whose parameters every resource (every domain resource) has.
const ABSTRACT_BASES: &[&str] = &["Resource", "DomainResource"];

#[derive(Default)]
struct SearchTable {
    /// Base type → supported parameters, sorted by code.
    params: BTreeMap<String, Vec<SearchEntry>>,
    /// Base type → unsupported parameters, sorted by code.
    unsupported: BTreeMap<String, Vec<UnsupportedEntry>>,
}

struct SearchEntry {
    code: String,
    kind: String,
    expression: String,
    targets: Vec<String>,
    url: String,
}

struct UnsupportedEntry {
    code: String,
    kind: String,
    reason: String,
}

impl SearchTable {
    fn supported_count(&self) -> usize {
        self.params.values().map(Vec::len).sum()
    }

    fn unsupported_count(&self) -> usize {
        self.unsupported.values().map(Vec::len).sum()
    }
}

fn search_table(model: &Model, search_bundle: &Value) -> Result<SearchTable> {
    let mut table = SearchTable::default();
    for parameter in bundle_resources(search_bundle, "SearchParameter") {
        let code = str_field(parameter, "code")?;
        let kind = str_field(parameter, "type")?;
        let url = str_field(parameter, "url")?;
        let bases: Vec<&str> = parameter["base"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let targets: Vec<String> = {
            let mut targets: Vec<String> = parameter["target"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            targets.sort();
            targets.dedup();
            targets
        };
        for base in &bases {
            if !model.resources.contains(*base) && !ABSTRACT_BASES.contains(base) {
                bail!("SearchParameter {url}: base {base} is not a resource type");
            }
            let unsupported = |reason: &str| UnsupportedEntry {
                code: code.to_string(),
                kind: kind.to_string(),
                reason: reason.to_string(),
            };
            let entry = if !SEARCH_TYPES.contains(&kind) {
                Err(unsupported(&format!("{kind} parameters are not supported")))
            } else {
                match parameter["expression"].as_str() {
                    None => Err(unsupported("no FHIRPath expression in the definition")),
                    Some(expression) => match restrict_expression(expression, base, bases.len()) {
                        Some(restricted) => Ok(SearchEntry {
                            code: code.to_string(),
                            kind: kind.to_string(),
                            expression: restricted,
                            targets: targets.clone(),
                            url: url.to_string(),
                        }),
                        None => Err(unsupported("the expression has no part for this type")),
                    },
                }
            };
            match entry {
                Ok(entry) => table.params.entry(base.to_string()).or_default().push(entry),
                Err(entry) => table.unsupported.entry(base.to_string()).or_default().push(entry),
            }
        }
    }
    for entries in table.params.values_mut() {
        entries.sort_by(|a, b| a.code.cmp(&b.code));
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].code == pair[1].code) {
            bail!("two search parameters named {} on one type", pair[0].code);
        }
    }
    for entries in table.unsupported.values_mut() {
        entries.sort_by(|a, b| a.code.cmp(&b.code));
    }
    Ok(table)
}

/// The part of a parameter's expression for one base type. A parameter with one base keeps
/// its whole expression; a parameter shared by several types (`Patient.name |
/// Practitioner.name`) keeps the `|`-separated parts rooted at `base` (`Patient.…` or
/// `(Patient.… as …)`). `None` when no part is for `base`.
fn restrict_expression(expression: &str, base: &str, base_count: usize) -> Option<String> {
    if base_count == 1 {
        return Some(expression.trim().to_string());
    }
    let parts: Vec<&str> =
        split_top_level(expression, '|').into_iter().map(str::trim).filter(|part| rooted_at(part, base)).collect();
    (!parts.is_empty()).then(|| parts.join(" | "))
}

fn rooted_at(part: &str, base: &str) -> bool {
    let unwrapped = part.trim_start_matches('(').trim_start();
    unwrapped.strip_prefix(base).is_some_and(|rest| rest.starts_with('.') || rest.is_empty())
}

/// Splits on `separator` outside parentheses and string literals.
fn split_top_level(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_string, mut start) = (0i32, false, 0usize);
    for (index, character) in text.char_indices() {
        match character {
            '\'' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => depth -= 1,
            c if c == separator && !in_string && depth == 0 => {
                parts.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn render_search_table(table: &SearchTable) -> String {
    let json = |value: Value| value.to_string();
    let mut out = String::from("{\"formatVersion\":1,\"fhirVersion\":\"4.0.1\",\n\"params\":{");
    for (index, (base, entries)) in table.params.iter().enumerate() {
        let entries: Vec<Value> = entries
            .iter()
            .map(|entry| {
                serde_json::json!({
                    "code": entry.code, "type": entry.kind, "expression": entry.expression,
                    "targets": entry.targets, "url": entry.url,
                })
            })
            .collect();
        let separator = if index == 0 { "\n" } else { ",\n" };
        let _ = write!(out, "{separator}{}:{}", json(Value::from(base.as_str())), json(Value::from(entries)));
    }
    out.push_str("},\n\"unsupported\":{");
    for (index, (base, entries)) in table.unsupported.iter().enumerate() {
        let entries: Vec<Value> = entries
            .iter()
            .map(|entry| serde_json::json!({"code": entry.code, "type": entry.kind, "reason": entry.reason}))
            .collect();
        let separator = if index == 0 { "\n" } else { ",\n" };
        let _ = write!(out, "{separator}{}:{}", json(Value::from(base.as_str())), json(Value::from(entries)));
    }
    out.push_str("}}\n");
    out
}

fn render_search_readme(out: &mut String, table: &SearchTable) {
    let _ = write!(
        out,
        "\n## Search parameters\n\n\
         `r4-search-parameters.json` lists, for each resource type (and `Resource`/`DomainResource`,\n\
         whose parameters every resource has), the {} parameters of type token, reference, string,\n\
         date, uri, number and quantity, each with its FHIRPath expression restricted to that type\n\
         (a parameter shared by several types keeps the `|`-separated parts rooted at the type) and\n\
         its reference targets. {} parameters are listed as unsupported, each with why:\n\n",
        table.supported_count(),
        table.unsupported_count()
    );
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in table.unsupported.values().flatten() {
        *reasons.entry(entry.reason.as_str()).or_default() += 1;
    }
    for (reason, count) in reasons {
        let _ = writeln!(out, "- {reason}: {count}");
    }
    out.push_str(
        "\nExpressions the server's FHIRPath subset cannot evaluate are listed by\n\
         `medvault_fhir::search::unsupported_params` at run time (and in\n\
         `docs/format/search-parameters.md`).\n",
    );
}
