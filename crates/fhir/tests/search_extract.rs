//! `extract`: the typed, normalized values a resource has for its search parameters.

use medvault_fhir::search::{extract, param, Decimal, IndexValue};
use serde_json::{json, Value};

fn values(resource: &Value, code: &str) -> Vec<IndexValue> {
    extract(resource).into_iter().filter(|entry| entry.param == code).map(|entry| entry.value).collect()
}

fn token(system: Option<&str>, code: &str) -> IndexValue {
    IndexValue::Token { system: system.map(str::to_string), code: code.to_string() }
}

fn string(normalized: &str, exact: &str) -> [IndexValue; 2] {
    [IndexValue::String(normalized.to_string()), IndexValue::StringExact(exact.to_string())]
}

fn ms(instant: &str) -> i64 {
    medvault_base::time::parse_instant(instant).expect("an instant")
}

fn d(text: &str) -> Decimal {
    Decimal::parse(text).expect("a decimal")
}

#[test]
fn patient_tokens_strings_dates_and_booleans() {
    let patient = json!({
        "resourceType": "Patient", "id": "p1",
        "meta": {"lastUpdated": "2024-05-06T07:08:09.123Z", "tag": [{"system": "urn:t", "code": "vip", "display": "V.I.P."}]},
        "identifier": [{"system": "urn:mrn", "value": "12345", "type": {"text": "Medical record"}}, {"value": "no-system"}],
        "active": true,
        "name": [{"family": "Zoë-Ünal", "given": ["Anne  Marie", "J."], "prefix": ["Dr"]}],
        "telecom": [{"system": "phone", "value": "+1 555"}, {"system": "email", "value": "a@b.example"}],
        "gender": "female",
        "birthDate": "1974-12",
        "address": [{"line": ["1 Main St"], "city": "Zürich", "postalCode": "8000"}],
        "deceasedBoolean": false,
        "generalPractitioner": [{"reference": "Practitioner/d1"}, {"reference": "#contained"}],
        "managingOrganization": {"reference": "https://other.example/fhir/Organization/o9/_history/2"}
    });
    assert_eq!(values(&patient, "_id"), [token(None, "p1")]);
    assert_eq!(
        values(&patient, "_lastUpdated"),
        [IndexValue::Date { low: ms("2024-05-06T07:08:09.123Z"), high: ms("2024-05-06T07:08:09.123Z") }]
    );
    assert_eq!(values(&patient, "_tag"), [token(Some("urn:t"), "vip"), IndexValue::TokenText("v.i.p.".into())]);
    assert_eq!(
        values(&patient, "identifier"),
        [token(Some("urn:mrn"), "12345"), IndexValue::TokenText("medical record".into()), token(None, "no-system")]
    );
    assert_eq!(values(&patient, "active"), [token(None, "true")]);
    assert_eq!(values(&patient, "deceased"), [token(None, "false")]);
    assert_eq!(values(&patient, "gender"), [token(Some("http://hl7.org/fhir/administrative-gender"), "female")]);
    assert_eq!(values(&patient, "phone"), [token(Some("phone"), "+1 555")]);
    assert_eq!(values(&patient, "email"), [token(Some("email"), "a@b.example")]);
    assert_eq!(values(&patient, "telecom").len(), 2);
    let mut expected_name = Vec::new();
    for (normalized, exact) in [("zoe-unal", "Zoë-Ünal"), ("anne marie", "Anne  Marie"), ("j.", "J."), ("dr", "Dr")] {
        expected_name.extend(string(normalized, exact));
    }
    assert_eq!(values(&patient, "name"), expected_name);
    assert_eq!(values(&patient, "family"), string("zoe-unal", "Zoë-Ünal"));
    assert_eq!(values(&patient, "address-city"), string("zurich", "Zürich"));
    assert_eq!(values(&patient, "address").len(), 6);
    assert_eq!(
        values(&patient, "birthdate"),
        [IndexValue::Date { low: ms("1974-12-01T00:00:00Z"), high: ms("1974-12-31T23:59:59.999Z") }]
    );
    assert_eq!(
        values(&patient, "general-practitioner"),
        [IndexValue::Reference {
            resource_type: Some("Practitioner".into()),
            id: Some("d1".into()),
            url: "Practitioner/d1".into()
        }]
    );
    assert_eq!(
        values(&patient, "organization"),
        [IndexValue::Reference {
            resource_type: Some("Organization".into()),
            id: None,
            url: "https://other.example/fhir/Organization/o9/_history/2".into()
        }]
    );
}

#[test]
fn observation_codes_quantities_periods_and_patient_references() {
    let observation = json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}], "text": "Blood sugar"},
        "subject": {"reference": "Patient/p1/_history/4"},
        "effectivePeriod": {"start": "2021-01-02T10:00:00Z"},
        "valueQuantity": {"value": 5.40, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "component": [{"code": {"text": "x"}, "valueQuantity": {"value": 1e2, "comparator": "<", "code": "mg"}}]
    });
    assert_eq!(
        values(&observation, "code"),
        [
            token(Some("http://loinc.org"), "2345-7"),
            IndexValue::TokenText("glucose".into()),
            IndexValue::TokenText("blood sugar".into())
        ]
    );
    assert_eq!(values(&observation, "status"), [token(Some("http://hl7.org/fhir/observation-status"), "final")]);
    let patient = IndexValue::Reference {
        resource_type: Some("Patient".into()),
        id: Some("p1".into()),
        url: "Patient/p1".into(),
    };
    assert_eq!(values(&observation, "subject"), std::slice::from_ref(&patient));
    assert_eq!(values(&observation, "patient"), [patient]);
    assert_eq!(values(&observation, "date"), [IndexValue::Date { low: ms("2021-01-02T10:00:00Z"), high: i64::MAX }]);
    assert_eq!(
        values(&observation, "value-quantity"),
        [IndexValue::Quantity {
            value: Some(d("5.4")),
            low: Some(d("5.4")),
            high: Some(d("5.4")),
            system: Some("http://unitsofmeasure.org".into()),
            code: Some("mmol/L".into()),
            unit: Some("mmol/L".into())
        }]
    );
    assert_eq!(
        values(&observation, "component-value-quantity"),
        [IndexValue::Quantity {
            value: Some(d("100")),
            low: None,
            high: Some(d("100")),
            system: None,
            code: Some("mg".into()),
            unit: None
        }]
    );
}

#[test]
fn patient_filters_keep_only_patient_references() {
    let encounter_with_group = json!({"resourceType": "Condition", "subject": {"reference": "Group/g1"}});
    assert_eq!(values(&encounter_with_group, "patient"), []);
    assert_eq!(values(&encounter_with_group, "subject").len(), 1);
    let typed = json!({"resourceType": "Condition", "subject": {"type": "Patient", "identifier": {"system": "urn:mrn", "value": "7"}}});
    assert_eq!(values(&typed, "patient"), [token(Some("urn:mrn"), "7")]);
}

#[test]
fn ranges_money_timing_numbers_and_uris() {
    let risk = json!({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/p"},
        "prediction": [{"probabilityDecimal": 0.02}, {"probabilityRange": {"low": {"value": 5}, "high": {"value": 10}}}]});
    assert_eq!(
        values(&risk, "probability"),
        [
            IndexValue::Number { value: Some(d("0.02")), low: Some(d("0.02")), high: Some(d("0.02")) },
            IndexValue::Number { value: None, low: Some(d("5")), high: Some(d("10")) }
        ]
    );
    let claim_response = json!({"resourceType": "ChargeItem", "status": "billable", "code": {"text": "x"},
        "subject": {"reference": "Patient/p"}, "priceOverride": {"value": 12.5, "currency": "EUR"}, "factorOverride": 0.8});
    assert_eq!(
        values(&claim_response, "price-override"),
        [IndexValue::Quantity {
            value: Some(d("12.5")),
            low: Some(d("12.5")),
            high: Some(d("12.5")),
            system: Some("urn:iso:std:iso:4217".into()),
            code: Some("EUR".into()),
            unit: None
        }]
    );
    assert_eq!(
        values(&claim_response, "factor-override"),
        [IndexValue::Number { value: Some(d("0.8")), low: Some(d("0.8")), high: Some(d("0.8")) }]
    );
    // MedicationRequest's `date` reads `timing.event`: each event is a value.
    let request = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p"}, "medicationCodeableConcept": {"text": "x"},
        "dosageInstruction": [{"timing": {"event": ["2020-03-05", "2020-01-02"]}}]});
    assert_eq!(values(&request, "date").len(), 2);
    // CarePlan's `activity-date` reads a whole Timing: its outer limits are one range.
    let plan = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p"},
        "activity": [{"detail": {"status": "scheduled",
            "scheduledTiming": {"event": ["2020-03-05", "2020-01-02"], "repeat": {"boundsPeriod": {"start": "2020-02", "end": "2020-04"}}}}}]});
    let param = param("CarePlan", "activity-date").expect("the activity-date parameter");
    assert!(param.skipped_types == ["string"], "{:?}", param.skipped_types);
    assert_eq!(
        values(&plan, "activity-date"),
        [IndexValue::Date { low: ms("2020-01-02T00:00:00Z"), high: ms("2020-04-30T23:59:59.999Z") }]
    );
    let value_set = json!({"resourceType": "ValueSet", "status": "draft", "url": "http://example.org/vs|1"});
    assert_eq!(values(&value_set, "url"), [IndexValue::Uri("http://example.org/vs|1".into())]);
    let questionnaire_response = json!({"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": "http://example.org/q|2"});
    assert_eq!(
        values(&questionnaire_response, "questionnaire"),
        [IndexValue::Reference { resource_type: None, id: None, url: "http://example.org/q|2".into() }]
    );
}

#[test]
fn extraction_is_empty_for_what_is_not_a_resource() {
    assert!(extract(&json!({"resourceType": "Nonsense", "id": "x"})).is_empty());
    assert!(extract(&json!([1, 2])).is_empty());
    assert!(extract(&json!({"id": "x"})).is_empty());
}
