//! One test per check of the validator: a valid resource broken in one way must report
//! exactly one issue, at the expected path and of the expected kind.

use medvault_fhir::{is_resource_type, is_valid_id, resource_types, validate_resource, IssueKind};
use serde_json::{json, Value};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "example",
        "active": true,
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "link": [{"other": {"reference": "Patient/other"}, "type": "seealso"}]
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "f001",
        "meta": {"versionId": "1", "lastUpdated": "2013-05-28T22:12:21Z"},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"
        }]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8", "display": "Glucose"}]},
        "subject": {"reference": "Patient/f001", "display": "P. van de Heuvel"},
        "effectivePeriod": {"start": "2013-04-02T09:30:10+01:00"},
        "issued": "2013-04-03T15:30:10.123+01:00",
        "performer": [{"reference": "Practitioner/f005"}],
        "valueQuantity": {"value": 6.30, "unit": "mmol/l", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}],
        "referenceRange": [{"low": {"value": 3.1, "unit": "mmol/l"}, "high": {"value": 6.2, "unit": "mmol/l"}}],
        "component": [{"code": {"text": "part"}, "valueInteger": 5}]
    })
}

/// The issues of a resource as (path, kind).
fn issues(resource: &Value) -> Vec<(String, IssueKind)> {
    match validate_resource(resource) {
        Ok(()) => Vec::new(),
        Err(error) => error.issues.into_iter().map(|issue| (issue.path, issue.kind)).collect(),
    }
}

#[track_caller]
fn assert_one_issue(resource: Value, path: &str, kind: IssueKind) {
    assert_eq!(issues(&resource), vec![(path.to_string(), kind)], "for {resource}");
}

/// Sets `pointer` (a JSON pointer; its parent must exist) in a copy of `resource`.
fn with(mut resource: Value, pointer: &str, value: Value) -> Value {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer");
    match resource.pointer_mut(parent).unwrap_or_else(|| panic!("{parent} exists")) {
        Value::Object(object) => {
            object.insert(last.to_string(), value);
        }
        Value::Array(items) => items[last.parse::<usize>().expect("an index")] = value,
        _ => panic!("{parent} is neither an object nor an array"),
    }
    resource
}

fn with_field(mut resource: Value, field: &str, value: Value) -> Value {
    resource.as_object_mut().expect("object").insert(field.to_string(), value);
    resource
}

fn without(mut resource: Value, field: &str) -> Value {
    resource.as_object_mut().expect("object").remove(field);
    resource
}

#[test]
fn the_base_resources_are_valid() {
    assert_eq!(issues(&patient()), vec![]);
    assert_eq!(issues(&observation()), vec![]);
}

#[test]
fn unknown_element() {
    assert_one_issue(with_field(patient(), "nickname", json!("Pete")), "Patient.nickname", IssueKind::Structure);
    assert_one_issue(with(patient(), "/name/0/middle", json!("J")), "Patient.name[0].middle", IssueKind::Structure);
    // A choice element by a type it does not allow, or by its bare name.
    assert_one_issue(
        with_field(without(observation(), "valueQuantity"), "valueMoney", json!({"value": 1})),
        "Observation.valueMoney",
        IssueKind::Structure,
    );
    assert_one_issue(with_field(observation(), "value", json!("x")), "Observation.value", IssueKind::Structure);
    // `_name` only exists for primitives.
    assert_one_issue(with_field(patient(), "_name", json!([{"id": "a"}])), "Patient._name", IssueKind::Structure);
}

#[test]
fn wrong_json_type() {
    assert_one_issue(with(patient(), "/active", json!("true")), "Patient.active", IssueKind::Structure);
    assert_one_issue(with(patient(), "/birthDate", json!(19741225)), "Patient.birthDate", IssueKind::Structure);
    assert_one_issue(
        with(patient(), "/name/0/family", json!({"x": 1})),
        "Patient.name[0].family",
        IssueKind::Structure,
    );
    assert_one_issue(with(observation(), "/code", json!("15074-8")), "Observation.code", IssueKind::Structure);
    assert_one_issue(
        with(observation(), "/valueQuantity/value", json!("6.3")),
        "Observation.value.ofType(Quantity).value",
        IssueKind::Structure,
    );
    assert_one_issue(with(patient(), "/gender", Value::Null), "Patient.gender", IssueKind::Structure);
}

#[test]
fn array_where_a_single_value_belongs() {
    assert_one_issue(with(patient(), "/gender", json!(["male"])), "Patient.gender", IssueKind::Structure);
    assert_one_issue(with(observation(), "/code", json!([{"text": "x"}])), "Observation.code", IssueKind::Structure);
}

#[test]
fn single_value_where_an_array_belongs() {
    assert_one_issue(with(patient(), "/name", json!({"family": "Chalmers"})), "Patient.name", IssueKind::Structure);
    assert_one_issue(with(patient(), "/name/0/given", json!("Peter")), "Patient.name[0].given", IssueKind::Structure);
}

#[test]
fn empty_values() {
    assert_one_issue(with(patient(), "/name", json!([])), "Patient.name", IssueKind::Structure);
    assert_one_issue(with(patient(), "/name/0", json!({})), "Patient.name[0]", IssueKind::Structure);
    assert_one_issue(with(patient(), "/name/0/family", json!("")), "Patient.name[0].family", IssueKind::Value);
    assert_one_issue(with(patient(), "/name/0/given/1", Value::Null), "Patient.name[0].given[1]", IssueKind::Structure);
}

#[test]
fn missing_required_element() {
    assert_one_issue(without(observation(), "status"), "Observation.status", IssueKind::Required);
    assert_one_issue(without(observation(), "code"), "Observation.code", IssueKind::Required);
    // Within a present backbone element.
    let link_without_type = with(patient(), "/link/0", json!({"other": {"reference": "Patient/other"}}));
    assert_one_issue(link_without_type, "Patient.link[0].type", IssueKind::Required);
    // Within a data type: Extension.url.
    let extension_without_url = with_field(patient(), "extension", json!([{"valueString": "x"}]));
    assert_one_issue(extension_without_url, "Patient.extension[0].url", IssueKind::Required);
    // Through a contentReference: Questionnaire.item.item is a Questionnaire.item.
    let questionnaire = json!({
        "resourceType": "Questionnaire", "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [{"type": "display", "text": "hello"}]}]
    });
    assert_one_issue(questionnaire, "Questionnaire.item[0].item[0].linkId", IssueKind::Required);
}

#[test]
fn code_outside_the_required_value_set() {
    assert_one_issue(with(patient(), "/gender", json!("yes")), "Patient.gender", IssueKind::CodeInvalid);
    assert_one_issue(with(observation(), "/status", json!("done")), "Observation.status", IssueKind::CodeInvalid);
    // In a data type: Quantity.comparator.
    assert_one_issue(
        with(observation(), "/valueQuantity/comparator", json!("~")),
        "Observation.value.ofType(Quantity).comparator",
        IssueKind::CodeInvalid,
    );
    // A CodeableConcept with a required binding, in the value set's code system.
    let allergy = json!({
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": "Patient/example"},
        "clinicalStatus": {"coding": [
            {"system": "http://example.org/local", "code": "anything"},
            {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "cured"}
        ]}
    });
    assert_one_issue(allergy, "AllergyIntolerance.clinicalStatus.coding[1].code", IssueKind::CodeInvalid);
}

#[test]
fn code_syntax() {
    assert_one_issue(with(patient(), "/gender", json!(" male")), "Patient.gender", IssueKind::Value);
    assert_one_issue(with(patient(), "/name/0/use", json!("official ")), "Patient.name[0].use", IssueKind::Value);
}

#[test]
fn bad_id() {
    assert_one_issue(with(patient(), "/id", json!("a_b")), "Patient.id", IssueKind::Value);
    assert_one_issue(with(patient(), "/id", json!("a".repeat(65))), "Patient.id", IssueKind::TooLong);
    assert!(is_valid_id("A-z.09") && !is_valid_id("") && !is_valid_id("a/b") && !is_valid_id(&"1".repeat(65)));
}

#[test]
fn bad_dates_and_times() {
    assert_one_issue(with(patient(), "/birthDate", json!("2020-13-01")), "Patient.birthDate", IssueKind::Value);
    assert_one_issue(with(patient(), "/birthDate", json!("2021-02-29")), "Patient.birthDate", IssueKind::Value);
    assert_one_issue(
        with(patient(), "/birthDate", json!("1974-12-25T10:00:00Z")),
        "Patient.birthDate",
        IssueKind::Value,
    );
    assert_one_issue(
        with(observation(), "/effectivePeriod/start", json!("2013-04-02T09:30")),
        "Observation.effective.ofType(Period).start",
        IssueKind::Value,
    );
    assert_one_issue(with(observation(), "/issued", json!("2013-04-03")), "Observation.issued", IssueKind::Value);
    assert_one_issue(
        with(observation(), "/meta/lastUpdated", json!("2013-05-28T22:12:21")),
        "Observation.meta.lastUpdated",
        IssueKind::Value,
    );
}

#[test]
fn numbers() {
    let component_value = "/component/0/valueInteger";
    let path = "Observation.component[0].value.ofType(integer)";
    assert_one_issue(with(observation(), component_value, json!(2147483648i64)), path, IssueKind::Value);
    assert_one_issue(with(observation(), component_value, json!(-2147483649i64)), path, IssueKind::Value);
    assert_one_issue(with(observation(), component_value, json!(1.5)), path, IssueKind::Value);
    assert_eq!(issues(&with(observation(), component_value, json!(-2147483648i64))), vec![]);
    let parsed: Value = serde_json::from_str(
        r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueInteger":1.0}"#,
    )
    .expect("JSON");
    assert_one_issue(parsed, "Observation.value.ofType(integer)", IssueKind::Value);
    // positiveInt and unsignedInt.
    let timing = |repeat: Value| {
        json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/1"}, "occurrenceTiming": {"repeat": repeat}})
    };
    let count_path = "ServiceRequest.occurrence.ofType(Timing).repeat.count";
    assert_one_issue(timing(json!({"count": 0})), count_path, IssueKind::Value);
    assert_one_issue(
        timing(json!({"offset": -1})),
        "ServiceRequest.occurrence.ofType(Timing).repeat.offset",
        IssueKind::Value,
    );
    assert_eq!(issues(&timing(json!({"count": 2147483647, "offset": 0}))), vec![]);
    // Decimals keep their text; any JSON number is a valid decimal.
    let precise: Value = serde_json::from_str(
        r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50000000000000000001e-3}}"#,
    )
    .expect("JSON");
    assert_eq!(issues(&precise), vec![]);
}

#[test]
fn other_primitive_formats() {
    let identifier = |system: Value| with_field(patient(), "identifier", json!([{"system": system, "value": "1"}]));
    assert_eq!(issues(&identifier(json!("urn:oid:1.2.3"))), vec![]);
    assert_one_issue(identifier(json!("http://x y")), "Patient.identifier[0].system", IssueKind::Value);
    let attachment = |data: &str| with_field(patient(), "photo", json!([{"contentType": "image/png", "data": data}]));
    assert_eq!(issues(&attachment("aGVsbG8=")), vec![]);
    assert_one_issue(attachment("aGVsbG8"), "Patient.photo[0].data", IssueKind::Value);
    assert_one_issue(with(patient(), "/name/0/family", json!("a\u{b}b")), "Patient.name[0].family", IssueKind::Value);
    let long = "x".repeat(1024 * 1024 + 1);
    assert_one_issue(with(patient(), "/name/0/family", json!(long)), "Patient.name[0].family", IssueKind::TooLong);
}

#[test]
fn bad_reference() {
    let subject = |reference: &str| with(observation(), "/subject/reference", json!(reference));
    for good in [
        "Patient/f001",
        "Patient/f001/_history/2",
        "http://example.org/fhir/Patient/1",
        "#p1",
        "#",
        "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7",
        "urn:oid:1.2.3.4",
        "Patient?identifier=http://x|1",
    ] {
        assert_eq!(issues(&subject(good)), vec![], "{good}");
    }
    for bad in
        ["Patient 123", "Patient/", "Foo/1", "Patient/a_b", "Patient/1/_history", "urn:uuid:xyz", "#a b", "Patient/1/2"]
    {
        assert_one_issue(subject(bad), "Observation.subject.reference", IssueKind::Value);
    }
}

#[test]
fn unknown_or_abstract_resource_type() {
    assert_one_issue(json!({"resourceType": "Patients"}), "resourceType", IssueKind::Structure);
    assert_one_issue(json!({"resourceType": "DomainResource", "id": "x"}), "resourceType", IssueKind::Structure);
    assert_one_issue(json!({"resourceType": "Resource"}), "resourceType", IssueKind::Structure);
    assert_one_issue(json!({"id": "x"}), "resourceType", IssueKind::Required);
    assert_one_issue(json!({"resourceType": 1}), "resourceType", IssueKind::Structure);
    assert_one_issue(json!([]), "Resource", IssueKind::Structure);
    assert!(is_resource_type("Patient") && !is_resource_type("DomainResource") && !is_resource_type("patient"));
    let types: Vec<&str> = resource_types().collect();
    assert_eq!(types.len(), 146);
    assert!(types.windows(2).all(|pair| pair[0] < pair[1]));
}

#[test]
fn invalid_nested_resources() {
    let contained = with_field(
        patient(),
        "contained",
        json!([
            {"resourceType": "Organization", "id": "org", "name": "Acme"},
            {"resourceType": "Observation", "id": "obs", "code": {"text": "x"}}
        ]),
    );
    assert_one_issue(contained, "Patient.contained[1].ofType(Observation).status", IssueKind::Required);
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7", "resource": with(patient(), "/gender", json!("yes"))}]
    });
    assert_one_issue(bundle, "Bundle.entry[0].resource.ofType(Patient).gender", IssueKind::CodeInvalid);
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "p", "resource": {"resourceType": "Nonsense"}}]
    });
    assert_one_issue(parameters, "Parameters.parameter[0].resource.resourceType", IssueKind::Structure);
    let contained_not_object = with_field(patient(), "contained", json!(["Organization/1"]));
    assert_one_issue(contained_not_object, "Patient.contained[0]", IssueKind::Structure);
}

#[test]
fn only_one_type_of_a_choice() {
    let both = with_field(observation(), "valueString", json!("high"));
    assert_one_issue(both, "Observation.value", IssueKind::Structure);
    let value_and_its_extension = with_field(
        with_field(without(observation(), "valueQuantity"), "valueString", json!("high")),
        "_valueString",
        json!({"id": "v"}),
    );
    assert_eq!(issues(&value_and_its_extension), vec![]);
}

#[test]
fn primitive_extensions() {
    let extension = json!({"extension": [{"url": "http://example.org/x", "valueBoolean": true}]});
    // A single primitive: `_birthDate`, with or without a value.
    assert_eq!(issues(&with_field(patient(), "_birthDate", extension.clone())), vec![]);
    assert_eq!(issues(&with_field(without(patient(), "birthDate"), "_birthDate", extension.clone())), vec![]);
    assert_one_issue(
        with_field(
            patient(),
            "_birthDate",
            json!({"extension": [{"url": "http://example.org/x", "valueBoolean": "yes"}]}),
        ),
        "Patient.birthDate.extension[0].value.ofType(boolean)",
        IssueKind::Structure,
    );
    assert_one_issue(
        with_field(patient(), "_birthDate", json!({"url": "x"})),
        "Patient.birthDate.url",
        IssueKind::Structure,
    );
    assert_one_issue(
        with_field(patient(), "_birthDate", json!([extension])),
        "Patient.birthDate",
        IssueKind::Structure,
    );
    // A primitive array: `_given` aligned with `given`, null where there is nothing.
    let aligned = with(patient(), "/name/0", json!({"given": ["Peter", null], "_given": [null, extension]}));
    assert_eq!(issues(&aligned), vec![]);
    let misaligned =
        with(patient(), "/name/0", json!({"given": ["Peter", "James"], "_given": [null, extension, null]}));
    assert_one_issue(misaligned, "Patient.name[0].given", IssueKind::Structure);
    let null_without_extension =
        with(patient(), "/name/0", json!({"given": ["Peter", null], "_given": [extension, null]}));
    assert_one_issue(null_without_extension, "Patient.name[0].given[1]", IssueKind::Structure);
    // A required primitive present only through its extensions counts as present.
    let status_by_extension = with_field(without(observation(), "status"), "_status", extension);
    assert_eq!(issues(&status_by_extension), vec![]);
}

#[test]
fn issues_render_and_convert() {
    let error = validate_resource(&with(patient(), "/gender", json!("yes"))).expect_err("invalid");
    assert_eq!(error.issues[0].kind.code(), "code-invalid");
    assert!(error.to_string().contains("Patient.gender"), "{error}");
    assert!(error.issues[0].message.contains("'yes'"), "{}", error.issues[0].message);
}
