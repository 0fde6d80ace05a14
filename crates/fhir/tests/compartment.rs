//! The patient compartment owner of resources, from the Patient CompartmentDefinition.

use medvault_fhir::{parse_relative_reference, patient_compartment_owner};
use serde_json::json;

#[test]
fn a_patient_owns_itself() {
    let patient = json!({"resourceType": "Patient", "id": "p1", "link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"}]});
    assert_eq!(patient_compartment_owner(&patient).as_deref(), Some("p1"));
    assert_eq!(patient_compartment_owner(&json!({"resourceType": "Patient"})), None);
}

#[test]
fn an_observation_belongs_to_its_subject_then_its_performer() {
    let observation = json!({
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "performer": [{"reference": "Practitioner/d1"}, {"reference": "Patient/performer"}],
        "subject": {"reference": "Patient/subject/_history/3"}
    });
    assert_eq!(patient_compartment_owner(&observation).as_deref(), Some("subject"));
    // Without a subject, a Patient among the performers (in document order) owns it.
    let mut without_subject = observation.clone();
    without_subject.as_object_mut().expect("object").remove("subject");
    assert_eq!(patient_compartment_owner(&without_subject).as_deref(), Some("performer"));
}

#[test]
fn an_observation_about_a_group_has_no_owner() {
    let observation = json!({
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Group/g1"}
    });
    assert_eq!(patient_compartment_owner(&observation), None);
    // Absolute, contained and urn references name no patient here.
    for reference in ["http://example.org/fhir/Patient/1", "#p1", "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7"] {
        let observation = json!({"resourceType": "Observation", "subject": {"reference": reference}});
        assert_eq!(patient_compartment_owner(&observation), None, "{reference}");
    }
}

#[test]
fn an_encounter_belongs_to_its_subject() {
    let encounter = json!({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/e1"},
        "participant": [{"individual": {"reference": "Practitioner/x"}}]
    });
    assert_eq!(patient_compartment_owner(&encounter).as_deref(), Some("e1"));
}

#[test]
fn nested_compartment_paths_are_followed() {
    // Appointment: participant.actor, through an array of backbone elements.
    let appointment = json!({
        "resourceType": "Appointment", "status": "booked",
        "participant": [
            {"actor": {"reference": "Practitioner/x"}, "status": "accepted"},
            {"actor": {"reference": "Patient/a1"}, "status": "accepted"}
        ]
    });
    assert_eq!(patient_compartment_owner(&appointment).as_deref(), Some("a1"));
}

#[test]
fn resources_outside_the_compartment_have_no_owner() {
    let practitioner = json!({"resourceType": "Practitioner", "id": "d1"});
    assert_eq!(patient_compartment_owner(&practitioner), None);
    let organization = json!({"resourceType": "Organization", "id": "o1", "partOf": {"reference": "Patient/p1"}});
    assert_eq!(patient_compartment_owner(&organization), None);
    assert_eq!(
        patient_compartment_owner(&json!({"resourceType": "Nonsense", "subject": {"reference": "Patient/1"}})),
        None
    );
    assert_eq!(patient_compartment_owner(&json!("Patient/1")), None);
}

#[test]
fn relative_references() {
    assert_eq!(parse_relative_reference("Observation/o-1.2"), Some(("Observation", "o-1.2")));
    assert_eq!(parse_relative_reference("Observation/o1/_history/v2"), Some(("Observation", "o1")));
    assert_eq!(parse_relative_reference("Observation/o1/_history/v 2"), None);
    assert_eq!(parse_relative_reference("DomainResource/1"), None);
}

#[test]
fn care_teams_and_encounters_name_the_practitioners_who_care() {
    use medvault_fhir::care_relationships;
    let team = json!({
        "resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/p1"},
        "participant": [
            {"member": {"reference": "Practitioner/d2"}},
            {"member": {"reference": "Practitioner/d1"}},
            {"member": {"reference": "Organization/o1"}},
            {"member": {"reference": "Practitioner/d1"}},
            {"member": {"reference": "https://elsewhere.example/Practitioner/d9"}}
        ]
    });
    assert_eq!(care_relationships(&team), Some(vec!["d1".to_string(), "d2".to_string()]));
    let mut ended = team.clone();
    ended["status"] = json!("inactive");
    assert_eq!(care_relationships(&ended), Some(vec![]));

    let encounter = json!({
        "resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "participant": [{"individual": {"reference": "Practitioner/d3"}}, {"individual": {"reference": "RelatedPerson/r1"}}]
    });
    assert_eq!(care_relationships(&encounter), Some(vec!["d3".to_string()]));
    let mut cancelled = encounter.clone();
    cancelled["status"] = json!("cancelled");
    assert_eq!(care_relationships(&cancelled), Some(vec![]));

    // Other types state no relationship, even with the same shape.
    assert_eq!(care_relationships(&json!({"resourceType": "Observation", "participant": []})), None);
}
