//! SMART App Launch scopes: parsing (v2 and v1), refusal of malformed input, decisions,
//! narrowing and the canonical text form.

use medvault_auth::scope::{
    Interaction, Permissions, Scope, ScopeContext, ScopeError, ScopeSet, SCOPES_MAX, SCOPE_BYTES_MAX,
    SCOPE_TEXT_BYTES_MAX,
};

use Interaction::{Create, Delete, Read, Search, Update};
use ScopeContext::{Patient, System, User};

fn parse(text: &str) -> ScopeSet {
    ScopeSet::parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

fn scope(text: &str) -> Scope {
    Scope::parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

#[test]
fn v2_scopes_parse_into_context_type_and_permissions() {
    assert_eq!(
        scope("patient/Observation.rs"),
        Scope {
            context: Patient,
            resource_type: Some("Observation".to_owned()),
            permissions: Permissions::of(&[Read, Search])
        }
    );
    assert_eq!(scope("user/*.cruds"), Scope { context: User, resource_type: None, permissions: Permissions::ALL });
    assert_eq!(
        scope("system/Patient.r"),
        Scope { context: System, resource_type: Some("Patient".to_owned()), permissions: Permissions::of(&[Read]) }
    );
    assert_eq!(scope("user/Encounter.cud").permissions, Permissions::of(&[Create, Update, Delete]));
    assert_eq!(scope("user/Encounter.s").permissions, Permissions::of(&[Search]));
    assert_eq!(scope("user/Encounter.cd").permissions, Permissions::of(&[Create, Delete]));
}

#[test]
fn v1_scopes_map_to_v2() {
    assert_eq!(scope("patient/*.read").permissions, Permissions::READ_V1);
    assert_eq!(scope("patient/*.read").to_string(), "patient/*.rs");
    assert_eq!(scope("user/Observation.write").to_string(), "user/Observation.cud");
    assert_eq!(scope("user/*.*").to_string(), "user/*.cruds");
    assert_eq!(parse("patient/Observation.read patient/Observation.write").to_string(), "patient/Observation.cruds");
}

#[test]
fn malformed_resource_scopes_are_refused_with_the_reason() {
    let cases = [
        ("patient/Observation.", "no permissions after the dot"),
        ("patient/Observation.sr", "permission letters must follow the order c, r, u, d, s without repeats"),
        ("patient/Observation.rr", "permission letters must follow the order c, r, u, d, s without repeats"),
        ("patient/Observation.dc", "permission letters must follow the order c, r, u, d, s without repeats"),
        ("patient/Observation.x", "permissions must be letters of c, r, u, d, s (or v1 read, write, *)"),
        ("patient/Observation.RS", "permissions must be letters of c, r, u, d, s (or v1 read, write, *)"),
        ("patient/Observation.Read", "permissions must be letters of c, r, u, d, s (or v1 read, write, *)"),
        ("patient/Observation.rs.r", "permissions must be letters of c, r, u, d, s (or v1 read, write, *)"),
        ("patient/Observation.**", "permissions must be letters of c, r, u, d, s (or v1 read, write, *)"),
        ("patient/Observation", "expected Type.permissions after the context"),
        ("patient/", "expected Type.permissions after the context"),
        ("patient/.rs", "resource type must be * or a FHIR type name"),
        ("patient/observation.rs", "resource type must be * or a FHIR type name"),
        ("patient/Obs3rvation.rs", "resource type must be * or a FHIR type name"),
        ("patient/Obs_ervation.rs", "resource type must be * or a FHIR type name"),
        ("patient/Observation/x.rs", "resource type must be * or a FHIR type name"),
        ("patient/**.rs", "resource type must be * or a FHIR type name"),
        ("user/Patient*.rs", "resource type must be * or a FHIR type name"),
    ];
    for (text, reason) in cases {
        assert_eq!(
            ScopeSet::parse(&format!("openid {text}")),
            Err(ScopeError::Malformed { scope: text.to_owned(), reason }),
            "{text}"
        );
    }
    assert_eq!(Scope::parse("openid"), Err(ScopeError::Malformed { scope: "openid".to_owned(), reason: "no context" }));
    assert_eq!(
        Scope::parse("launch/patient"),
        Err(ScopeError::Malformed {
            scope: "launch/patient".to_owned(),
            reason: "context must be patient, user or system"
        })
    );
}

#[test]
fn resource_type_names_are_limited_to_64_characters() {
    let longest = format!("A{}", "b".repeat(63));
    assert_eq!(scope(&format!("user/{longest}.r")).resource_type.as_deref(), Some(longest.as_str()));
    let too_long = format!("A{}", "b".repeat(64));
    assert!(matches!(
        Scope::parse(&format!("user/{too_long}.r")),
        Err(ScopeError::Malformed { reason: "resource type must be * or a FHIR type name", .. })
    ));
}

#[test]
fn granular_scopes_are_refused_not_widened() {
    for text in ["patient/Observation.rs?category=laboratory", "user/*.rs?_security=R", "patient/Observation.rs?"] {
        assert_eq!(ScopeSet::parse(text), Err(ScopeError::GranularUnsupported { scope: text.to_owned() }), "{text}");
    }
    assert_eq!(
        ScopeError::GranularUnsupported { scope: "patient/Observation.rs?category=laboratory".to_owned() }.to_string(),
        "scope `patient/Observation.rs?category=laboratory`: granular scopes (?param=value) are not supported yet"
    );
}

#[test]
fn other_scopes_are_kept_as_strings() {
    let set = parse("openid fhirUser launch/patient offline_access patient/*.rs launch openid");
    assert_eq!(set.other_scopes(), ["openid", "fhirUser", "launch/patient", "offline_access", "launch"]);
    assert!(set.has_other("offline_access"));
    assert!(!set.has_other("online_access"));
    assert_eq!(set.resource_scopes().len(), 1);
    assert_eq!(set.to_string(), "patient/*.rs openid fhirUser launch/patient offline_access launch");
}

#[test]
fn size_and_character_limits() {
    let sixty_four = vec!["openid"; SCOPES_MAX].join(" ");
    assert!(ScopeSet::parse(&sixty_four).is_ok());
    let sixty_five = vec!["openid"; SCOPES_MAX + 1].join(" ");
    assert_eq!(ScopeSet::parse(&sixty_five), Err(ScopeError::TooMany { max: 64 }));

    assert!(ScopeSet::parse(&format!("x{}", "y".repeat(SCOPE_BYTES_MAX - 1))).is_ok());
    assert_eq!(ScopeSet::parse(&"y".repeat(SCOPE_BYTES_MAX + 1)), Err(ScopeError::ScopeTooLong { max: 128 }));

    let huge = " ".repeat(SCOPE_TEXT_BYTES_MAX + 1);
    assert_eq!(ScopeSet::parse(&huge), Err(ScopeError::TextTooLong { max: SCOPE_TEXT_BYTES_MAX }));

    for bad in ["openid\tprofile", "open\"id", "open\\id", "openid\n", "ﬁhirUser", "patient/Observation.r\u{0}"] {
        assert_eq!(ScopeSet::parse(bad), Err(ScopeError::InvalidCharacter), "{bad:?}");
    }
}

#[test]
fn spaces_around_and_between_are_tolerated_and_empty_is_empty() {
    assert_eq!(parse("  openid   patient/*.rs ").to_string(), "patient/*.rs openid");
    assert!(parse("").is_empty());
    assert!(parse("   ").is_empty());
    assert!(!parse("openid").is_empty());
    assert!(!parse("user/*.r").is_empty());
}

#[test]
fn allows_checks_context_type_and_interaction() {
    let set = parse("patient/Observation.rs user/*.r system/Patient.cu");
    assert!(set.allows(Patient, "Observation", Read));
    assert!(set.allows(Patient, "Observation", Search));
    assert!(!set.allows(Patient, "Observation", Create));
    assert!(!set.allows(Patient, "Condition", Read));
    assert!(set.allows(User, "Condition", Read));
    assert!(set.allows(User, "Observation", Read));
    assert!(!set.allows(User, "Observation", Search));
    assert!(set.allows(System, "Patient", Create));
    assert!(set.allows(System, "Patient", Update));
    assert!(!set.allows(System, "Patient", Read));
    assert!(!set.allows(System, "Observation", Create));
    // Contexts do not stand in for each other.
    assert!(!set.allows(System, "Condition", Read));
    assert!(!set.allows(Patient, "Patient", Create));
    // Type names are exact.
    assert!(!set.allows(Patient, "observation", Read));
    assert!(!parse("openid fhirUser").allows(User, "Patient", Read));
}

#[test]
fn repeats_merge_and_wildcards_absorb_what_they_cover() {
    assert_eq!(parse("user/Observation.r user/Observation.s").to_string(), "user/Observation.rs");
    assert_eq!(parse("user/Observation.r user/*.rs").to_string(), "user/*.rs");
    assert_eq!(parse("user/Observation.cr user/*.rs").to_string(), "user/Observation.cr user/*.rs");
    assert_eq!(parse("patient/Observation.r user/*.rs").to_string(), "patient/Observation.r user/*.rs");
}

#[test]
fn display_is_canonical_v2_and_round_trips() {
    let inputs = [
        "patient/*.read user/Observation.write system/Patient.rs openid fhirUser",
        "user/*.* offline_access",
        "patient/Observation.rs patient/Condition.r launch/patient",
        "system/*.cruds",
        "",
    ];
    for text in inputs {
        let set = parse(text);
        let canonical = set.to_string();
        assert_eq!(parse(&canonical), set, "{text} → {canonical}");
        assert_eq!(parse(&canonical).to_string(), canonical);
    }
    assert_eq!(parse(inputs[0]).to_string(), "patient/*.rs user/Observation.cud system/Patient.rs openid fhirUser");
}

#[test]
fn narrow_keeps_only_what_both_sides_allow() {
    let granted = parse("user/*.rs user/Observation.cruds patient/Observation.r openid fhirUser");
    let cases = [
        // Requested type-specific, granted wildcard: the type, permissions intersected.
        ("user/Condition.cruds", "user/Condition.rs"),
        // Requested and granted the same type.
        ("user/Observation.cud", "user/Observation.cud"),
        // Requested wildcard, granted wildcard and a specific type.
        ("user/*.cruds", "user/*.rs user/Observation.cruds"),
        // Requested wildcard, granted only a specific type.
        ("patient/*.rs", "patient/Observation.r"),
        // Nothing of that context granted.
        ("system/*.rs", ""),
        // Granted type-specific only, another type requested.
        ("patient/Condition.r", ""),
        // Other scopes: kept when both have them.
        ("openid fhirUser offline_access", "openid fhirUser"),
        ("patient/Observation.cu", ""),
    ];
    for (requested, expected) in cases {
        let narrowed = parse(requested).narrow(&granted);
        assert_eq!(narrowed.to_string(), expected, "{requested}");
        assert_eq!(narrowed.is_empty(), expected.is_empty());
    }
}

#[test]
fn narrow_never_allows_more_than_either_side() {
    let sets = [
        "user/*.rs user/Observation.cruds",
        "user/Observation.r user/Condition.cud",
        "user/*.cruds",
        "patient/*.rs system/Patient.cr",
        "user/Patient.s patient/Observation.rs",
        "",
    ];
    let types = ["Observation", "Condition", "Patient", "Encounter"];
    for requested in sets {
        for granted in sets {
            let narrowed = parse(requested).narrow(&parse(granted));
            for context in [Patient, User, System] {
                for resource_type in types {
                    for interaction in [Create, Read, Update, Delete, Search] {
                        let both = parse(requested).allows(context, resource_type, interaction)
                            && parse(granted).allows(context, resource_type, interaction);
                        assert_eq!(
                            narrowed.allows(context, resource_type, interaction),
                            both,
                            "{requested} ∩ {granted}: {context:?} {resource_type} {interaction:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn errors_quote_only_checked_scopes() {
    let error = ScopeSet::parse("patient/Observation.x").expect_err("malformed");
    assert_eq!(
        error.to_string(),
        "scope `patient/Observation.x`: permissions must be letters of c, r, u, d, s (or v1 read, write, *)"
    );
    let error = ScopeSet::parse("patient/Observation.r\u{1b}[31m").expect_err("escape");
    assert_eq!(error.to_string(), "a scope contains a character outside the OAuth scope syntax");
}
