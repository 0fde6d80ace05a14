//! The reference evaluator (`matches`) on the rules of the R4 search specification, with
//! the specification's own examples where it gives them. Queries go through `parse_query`.

use medvault_fhir::search::{matches, parse_query, Handling};
use serde_json::{json, Value};

/// Whether `resource` satisfies every clause of the query string `query` (`a=b&c=d`, not
/// percent-encoded) parsed strictly for the resource's type.
fn m(resource: &Value, query: &str) -> bool {
    let resource_type = resource["resourceType"].as_str().expect("a resource");
    let pairs: Vec<(String, String)> = query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_string(), value.to_string())
        })
        .collect();
    let (parsed, warnings) =
        parse_query(resource_type, &pairs, Handling::Strict).unwrap_or_else(|error| panic!("{query}: {error}"));
    assert!(warnings.is_empty(), "{query}: {warnings:?}");
    assert!(!parsed.clauses.is_empty(), "{query}");
    parsed.clauses.iter().all(|clause| matches(resource, clause))
}

fn observation_at(effective: Value) -> Value {
    let mut observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    let key = if effective.is_object() { "effectivePeriod" } else { "effectiveDateTime" };
    observation[key] = effective;
    observation
}

#[test]
fn date_prefixes_follow_the_specification_table() {
    let at = |text: &str| observation_at(json!(text));
    // eq: "2013-01-14" includes 2013-01-14T00:00 and 2013-01-14T10:00 but not 2013-01-15T00:00.
    assert!(m(&at("2013-01-14T00:00:00Z"), "date=2013-01-14"));
    assert!(m(&at("2013-01-14T10:00:00Z"), "date=eq2013-01-14"));
    assert!(!m(&at("2013-01-15T00:00:00Z"), "date=2013-01-14"));
    // ne: includes 2013-01-15T00:00, not 2013-01-14T00:00 or 2013-01-14T10:00.
    assert!(m(&at("2013-01-15T00:00:00Z"), "date=ne2013-01-14"));
    assert!(!m(&at("2013-01-14T10:00:00Z"), "date=ne2013-01-14"));
    // lt2013-01-14T10:00 includes 2013-01-14 (a day that starts before 10:00).
    assert!(m(&at("2013-01-14"), "date=lt2013-01-14T10:00Z"));
    assert!(!m(&at("2013-01-14T10:00:00Z"), "date=lt2013-01-14T10:00Z"));
    // gt2013-01-14T10:00 includes 2013-01-14T11:00 and the whole day 2013-01-14.
    assert!(m(&at("2013-01-14T11:00:00Z"), "date=gt2013-01-14T10:00Z"));
    assert!(m(&at("2013-01-14"), "date=gt2013-01-14T10:00Z"));
    assert!(!m(&at("2013-01-14T10:00:30Z"), "date=gt2013-01-14T10:00Z"));
    // ge and le include a period "from 21-Jan 2013 onwards" for 2013-03-14.
    let onwards = observation_at(json!({"start": "2013-01-21"}));
    assert!(m(&onwards, "date=ge2013-03-14"));
    assert!(m(&onwards, "date=le2013-03-14"));
    assert!(!m(&onwards, "date=eq2013-03-14"));
    // sa: starts after the whole search range; eb: ends before it.
    assert!(m(&observation_at(json!({"start": "2013-03-15"})), "date=sa2013-03-14"));
    assert!(!m(&onwards, "date=sa2013-03-14"));
    assert!(m(&observation_at(json!({"start": "2013-01-21", "end": "2013-03-10"})), "date=eb2013-03-14"));
    assert!(!m(&observation_at(json!({"start": "2013-01-21", "end": "2013-03-14"})), "date=eb2013-03-14"));
    assert!(!m(&onwards, "date=eb2013-03-14"));
    // Partial dates on both sides: a year contains its months.
    assert!(m(&at("2013-03"), "date=2013"));
    assert!(!m(&at("2013"), "date=2013-03"));
    assert!(m(&at("2013"), "date=ge2013-03"));
    // ap: within a tenth of the search range's width (a day: 2.4 hours) either side.
    assert!(m(&at("2013-03-15T02:00:00Z"), "date=ap2013-03-14"));
    assert!(!m(&at("2013-03-15T03:00:00Z"), "date=ap2013-03-14"));
    // Time zones: the same instant written in another zone.
    assert!(m(&at("2013-01-14T23:30:00-02:00"), "date=2013-01-15"));
}

#[test]
fn number_precision_and_prefixes() {
    let risk = |probability: Value| {
        json!({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/p"},
            "prediction": [{"probabilityDecimal": probability}]})
    };
    // 100 searches [99.5, 100.5); 100.00 searches [99.995, 100.005).
    assert!(m(&risk(json!(99.5)), "probability=100"));
    assert!(m(&risk(json!(100.4999)), "probability=100"));
    assert!(!m(&risk(json!(100.5)), "probability=100"));
    assert!(!m(&risk(json!(99.99)), "probability=100.00"));
    assert!(m(&risk(json!(100.004)), "probability=100.00"));
    // 1e2 has one significant figure: [50, 150).
    assert!(m(&risk(json!(149)), "probability=1e2"));
    assert!(!m(&risk(json!(150)), "probability=1e2"));
    // Other prefixes ignore the implicit precision.
    assert!(m(&risk(json!(100.1)), "probability=gt100"));
    assert!(!m(&risk(json!(100)), "probability=gt100"));
    assert!(m(&risk(json!(100)), "probability=ge100"));
    assert!(m(&risk(json!(99.9)), "probability=lt100"));
    assert!(m(&risk(json!(100)), "probability=le100"));
    assert!(m(&risk(json!(101)), "probability=ne100"));
    assert!(!m(&risk(json!(100.2)), "probability=ne100"));
    // ap: within 10 %.
    assert!(m(&risk(json!(109)), "probability=ap100"));
    assert!(!m(&risk(json!(111)), "probability=ap100"));
    // A Range in the resource: within, above, below.
    let range = json!({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/p"},
        "prediction": [{"probabilityRange": {"low": {"value": 5}, "high": {"value": 10}}}]});
    assert!(m(&range, "probability=gt9"));
    assert!(!m(&range, "probability=gt10"));
    assert!(m(&range, "probability=lt6"));
    assert!(m(&range, "probability=sa4"));
    assert!(!m(&range, "probability=sa5"));
    assert!(m(&range, "probability=eb11"));
    assert!(!m(&range, "probability=7"));
    assert!(m(&range, "probability=1e1"));
}

#[test]
fn quantities_with_units() {
    let glucose = |value: Value, extra: Value| {
        let mut quantity =
            json!({"value": value, "unit": "mmol/l", "system": "http://unitsofmeasure.org", "code": "mmol/L"});
        if let (Some(quantity), Some(extra)) = (quantity.as_object_mut(), extra.as_object()) {
            quantity.extend(extra.clone());
        }
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "glucose"}, "valueQuantity": quantity})
    };
    let five = glucose(json!(5.4), json!({}));
    // The specification's example: value-quantity=5.4|http://unitsofmeasure.org|mmol/L.
    assert!(m(&five, "value-quantity=5.4|http://unitsofmeasure.org|mmol/L"));
    assert!(m(&five, "value-quantity=5.4"));
    assert!(m(&five, "value-quantity=5.4||mmol/L"));
    assert!(m(&five, "value-quantity=5.4||mmol/l"), "the human unit when no system is given");
    assert!(!m(&five, "value-quantity=5.4|http://unitsofmeasure.org|mg"));
    assert!(!m(&five, "value-quantity=5.4|urn:other|mmol/L"));
    assert!(m(&five, "value-quantity=lt6|http://unitsofmeasure.org|mmol/L"));
    assert!(!m(&five, "value-quantity=gt5.4"));
    assert!(m(&five, "value-quantity=ap5"));
    // A comparator opens the value's range: "<5" is below 4 too.
    let below_five = glucose(json!(5), json!({"comparator": "<"}));
    assert!(m(&below_five, "value-quantity=lt4"));
    assert!(!m(&below_five, "value-quantity=gt5"));
    assert!(!m(&below_five, "value-quantity=5"));
}

#[test]
fn strings_prefix_exact_contains_and_accents() {
    let patient = json!({"resourceType": "Patient", "name": [{"family": "Müller-Lüdenscheidt", "given": ["Eve"]}],
        "address": [{"city": "São Paulo"}]});
    assert!(m(&patient, "family=muller"));
    assert!(m(&patient, "family=MÜLLER-l"));
    assert!(!m(&patient, "family=ller"));
    assert!(m(&patient, "family:contains=ller"));
    assert!(m(&patient, "family:contains=LÜDEN"));
    assert!(m(&patient, "family:exact=Müller-Lüdenscheidt"));
    assert!(!m(&patient, "family:exact=müller-lüdenscheidt"));
    assert!(!m(&patient, "family:exact=Müller"));
    assert!(m(&patient, "name=eve"));
    assert!(m(&patient, "address=sao"));
    assert!(m(&patient, "address-city=SAO PAULO"));
    // OR within a parameter, AND across repeats.
    assert!(m(&patient, "family=smith,mul"));
    assert!(!m(&patient, "family=smith&family=mul"));
    assert!(m(&patient, "family=mull&given=ev"));
    // An escaped comma is part of the value.
    let comma = json!({"resourceType": "Patient", "name": [{"family": "Smith, Jr"}]});
    assert!(m(&comma, "family=smith\\, j"));
    assert!(!m(&comma, "family=jr"));
}

#[test]
fn tokens_systems_not_and_text() {
    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum"}],
                 "text": "Blood sugar"},
        "identifier": [{"value": "no-system"}]});
    assert!(m(&observation, "code=2345-7"));
    assert!(m(&observation, "code=http://loinc.org|2345-7"));
    assert!(!m(&observation, "code=http://snomed.info/sct|2345-7"));
    assert!(!m(&observation, "code=|2345-7"), "|code asks for no system");
    assert!(m(&observation, "identifier=|no-system"));
    assert!(m(&observation, "code=http://loinc.org|"));
    assert!(!m(&observation, "code=2345"), "tokens are whole codes");
    assert!(!m(&observation, "code=2345-7X"));
    assert!(m(&observation, "code:not=1234-5"));
    assert!(!m(&observation, "code:not=2345-7"));
    assert!(!m(&observation, "code:not=1234-5,2345-7"));
    assert!(m(&observation, "code:text=blood"));
    assert!(m(&observation, "code:text=BLOOD SU"));
    assert!(m(&observation, "code:text=glucose [mass"), "the display of a coding");
    assert!(!m(&observation, "code:text=sugar"), "a prefix of the whole text, as strings are");
    assert!(!m(&observation, "code:text=ugar"));
    assert!(m(&observation, "status=final"));
    assert!(m(&observation, "status=http://hl7.org/fhir/observation-status|final"));
    // :not also holds when the resource has no value (R4).
    assert!(m(&observation, "category:not=laboratory"));
    let patient = json!({"resourceType": "Patient", "id": "p1", "active": false, "gender": "other"});
    assert!(m(&patient, "active=false"));
    assert!(!m(&patient, "active=true"));
    assert!(m(&patient, "_id=p1"));
    assert!(m(&patient, "_id=p0,p1"));
    assert!(m(&patient, "deceased=false"));
}

#[test]
fn identifiers_of_type() {
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    let patient = json!({"resourceType": "Patient", "identifier": [
        {"type": {"coding": [{"system": v2, "code": "MR"}]}, "system": "urn:mrn", "value": "446053"},
        {"type": {"coding": [{"system": v2, "code": "DL"}]}, "value": "D-1"}]});
    assert!(m(&patient, &format!("identifier:of-type={v2}|MR|446053")));
    assert!(!m(&patient, &format!("identifier:of-type={v2}|MR|D-1")), "the value of another identifier");
    assert!(!m(&patient, &format!("identifier:of-type={v2}|DL|446053")));
    assert!(m(&patient, &format!("identifier:of-type={v2}|DL|D-1,{v2}|XX|1")));
}

#[test]
fn references_by_id_type_url_and_identifier() {
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/p1/_history/3"},
        "performer": [{"reference": "https://other.example/fhir/Practitioner/d1"}, {"identifier": {"system": "urn:npi", "value": "42"}}],
        "basedOn": [{"reference": "#contained"}]});
    assert!(m(&observation, "subject=Patient/p1"));
    assert!(m(&observation, "subject=p1"));
    assert!(m(&observation, "subject:Patient=p1"));
    assert!(!m(&observation, "subject:Group=p1"));
    assert!(!m(&observation, "subject=Patient/p2"));
    assert!(m(&observation, "subject=Patient/p1/_history/9"), "the version of a search reference is ignored");
    assert!(m(&observation, "patient=p1"));
    assert!(m(&observation, "performer=https://other.example/fhir/Practitioner/d1"));
    assert!(!m(&observation, "performer=d1"), "an absolute reference is not a local id");
    assert!(m(&observation, "performer:identifier=urn:npi|42"));
    assert!(!m(&observation, "performer:identifier=urn:npi|43"));
    assert!(m(&observation, "based-on:missing=true"), "a contained reference is not indexed");
    assert!(m(&observation, "subject:missing=false"));
    assert!(!m(&observation, "subject:missing=true"));
    let response = json!({"resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": "http://example.org/q|2"});
    assert!(m(&response, "questionnaire=http://example.org/q"));
    assert!(m(&response, "questionnaire=http://example.org/q|2"));
    assert!(!m(&response, "questionnaire=http://example.org/q|3"));
}

#[test]
fn uris_exact_above_and_below() {
    let value_set = json!({"resourceType": "ValueSet", "status": "draft", "url": "http://acme.org/fhir/ValueSet/123"});
    assert!(m(&value_set, "url=http://acme.org/fhir/ValueSet/123"));
    assert!(!m(&value_set, "url=http://acme.org/fhir/ValueSet"));
    assert!(m(&value_set, "url:below=http://acme.org/fhir/"));
    assert!(!m(&value_set, "url:below=http://acme.org/other"));
    assert!(m(&value_set, "url:above=http://acme.org/fhir/ValueSet/123/_history/5"));
    assert!(!m(&value_set, "url:above=http://acme.org/fhir/ValueSet/12"));
}

#[test]
fn missing_and_last_updated() {
    let patient =
        json!({"resourceType": "Patient", "meta": {"lastUpdated": "2024-05-06T07:08:09.123Z"}, "birthDate": "1970"});
    assert!(m(&patient, "birthdate:missing=false"));
    assert!(m(&patient, "gender:missing=true"));
    assert!(!m(&patient, "gender:missing=false"));
    assert!(m(&patient, "_lastUpdated=2024-05"));
    assert!(m(&patient, "_lastUpdated=gt2024-05-06T07:08:08Z"));
    assert!(!m(&patient, "_lastUpdated=gt2024-05-06T07:08:09Z"), "the second 09 contains .123");
    assert!(m(&patient, "_lastUpdated=ge2024-05-06T07:08:09Z"));
    assert!(!m(&patient, "_lastUpdated=gt2024-05-06T07:08:09.123Z"));
    assert!(m(&patient, "_lastUpdated=ge2024-05-06T07:08:09.123Z"));
}
