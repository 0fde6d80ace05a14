//! `parse_query`: query strings into typed queries, and bad queries refused (strict) or
//! ignored and reported (lenient), as R4's `Prefer: handling` asks.

use medvault_base::limits::{SEARCH_COUNT_MAX, SEARCH_PARAMETERS_MAX, SEARCH_VALUES_MAX};
use medvault_fhir::search::{
    parse_query, Chain, Clause, Decimal, Handling, Include, Modifier, Prefix, Query, QueryValue, SearchError, Summary,
    Total,
};

fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_string(), value.to_string())
        })
        .collect()
}

fn strict(resource_type: &str, query: &str) -> Result<Query, SearchError> {
    parse_query(resource_type, &pairs(query), Handling::Strict).map(|(query, warnings)| {
        assert!(warnings.is_empty(), "{warnings:?}");
        query
    })
}

fn ok(resource_type: &str, query: &str) -> Query {
    strict(resource_type, query).unwrap_or_else(|error| panic!("{query}: {error}"))
}

fn token(system: Option<Option<&str>>, code: Option<&str>) -> QueryValue {
    QueryValue::Token { system: system.map(|system| system.map(str::to_string)), code: code.map(str::to_string) }
}

fn d(text: &str) -> Decimal {
    Decimal::parse(text).expect("a decimal")
}

#[test]
fn token_forms_and_or_and_and() {
    let query = ok("Observation", "code=http://loinc.org|1234-5,|abc,xyz,http://snomed.info/sct|&code=2");
    assert_eq!(query.clauses.len(), 2, "a repeated parameter is AND");
    assert_eq!(
        query.clauses[0],
        Clause {
            param: "code".into(),
            modifier: None,
            chain: None,
            values: vec![
                token(Some(Some("http://loinc.org")), Some("1234-5")),
                token(Some(None), Some("abc")),
                token(None, Some("xyz")),
                token(Some(Some("http://snomed.info/sct")), None),
            ]
        }
    );
    let escaped = ok("Observation", "code=a\\,b,c\\|d");
    assert_eq!(escaped.clauses[0].values, [token(None, Some("a,b")), token(None, Some("c|d"))]);
    assert_eq!(ok("Observation", "code:not=x").clauses[0].modifier, Some(Modifier::Not));
    assert_eq!(
        ok("Observation", "code:text=Blood  Sugar").clauses[0].values,
        [QueryValue::String { exact: "Blood  Sugar".into(), normalized: "blood sugar".into() }]
    );
}

#[test]
fn strings_dates_numbers_quantities_uris_and_missing() {
    assert_eq!(
        ok("Patient", "family:exact=Zoë").clauses[0],
        Clause {
            param: "family".into(),
            modifier: Some(Modifier::Exact),
            chain: None,
            values: vec![QueryValue::String { exact: "Zoë".into(), normalized: "zoe".into() }]
        }
    );
    let birthdate = ok("Patient", "birthdate=ge2020-02&birthdate=lt2021");
    let ms = |instant: &str| medvault_base::time::parse_instant(instant).expect("an instant");
    assert_eq!(
        birthdate.clauses[0].values,
        [QueryValue::Date {
            prefix: Prefix::Ge,
            low: ms("2020-02-01T00:00:00Z"),
            high: ms("2020-02-29T23:59:59.999Z")
        }]
    );
    assert!(matches!(birthdate.clauses[1].values[0], QueryValue::Date { prefix: Prefix::Lt, .. }));
    assert_eq!(
        ok("RiskAssessment", "probability=sa0.80").clauses[0].values,
        [QueryValue::Number { prefix: Prefix::Sa, value: d("0.8"), low: d("0.795"), high: d("0.805") }]
    );
    assert_eq!(
        ok("Observation", "value-quantity=le5.4|http://unitsofmeasure.org|mmol/L,5.4||mg,7").clauses[0].values,
        [
            QueryValue::Quantity {
                prefix: Prefix::Le,
                value: d("5.4"),
                low: d("5.35"),
                high: d("5.45"),
                system: Some("http://unitsofmeasure.org".into()),
                code: Some("mmol/L".into())
            },
            QueryValue::Quantity {
                prefix: Prefix::Eq,
                value: d("5.4"),
                low: d("5.35"),
                high: d("5.45"),
                system: None,
                code: Some("mg".into())
            },
            QueryValue::Quantity {
                prefix: Prefix::Eq,
                value: d("7"),
                low: d("6.5"),
                high: d("7.5"),
                system: None,
                code: None
            },
        ]
    );
    assert_eq!(
        ok("ValueSet", "url:below=http://acme.org/fhir").clauses[0].values,
        [QueryValue::Uri("http://acme.org/fhir".into())]
    );
    let missing = ok("Patient", "gender:missing=true&birthdate:missing=false");
    assert_eq!(missing.clauses[0].modifier, Some(Modifier::Missing(true)));
    assert_eq!(missing.clauses[1].modifier, Some(Modifier::Missing(false)));
    assert!(missing.clauses[0].values.is_empty());
}

#[test]
fn references_types_and_chains() {
    let subject = ok(
        "Observation",
        "subject=Patient/p1,p2,https://x.example/fhir/Patient/p3&subject:Patient=p4&performer:identifier=urn:npi|42",
    );
    assert_eq!(
        subject.clauses[0].values,
        [
            QueryValue::Reference {
                resource_type: Some("Patient".into()),
                id: Some("p1".into()),
                url: "Patient/p1".into()
            },
            QueryValue::Reference { resource_type: None, id: Some("p2".into()), url: "p2".into() },
            QueryValue::Reference { resource_type: None, id: None, url: "https://x.example/fhir/Patient/p3".into() },
        ]
    );
    assert_eq!(subject.clauses[1].modifier, Some(Modifier::Type("Patient".into())));
    assert_eq!(
        subject.clauses[1].values,
        [QueryValue::Reference {
            resource_type: Some("Patient".into()),
            id: Some("p4".into()),
            url: "Patient/p4".into()
        }]
    );
    assert_eq!(subject.clauses[2].values, [token(Some(Some("urn:npi")), Some("42"))]);
    let chained = ok("Observation", "subject:Patient.name:exact=Eve&patient.birthdate=1970");
    assert_eq!(
        chained.clauses[0],
        Clause {
            param: "subject".into(),
            modifier: Some(Modifier::Exact),
            chain: Some(Chain { target_type: "Patient".into(), param: "name".into() }),
            values: vec![QueryValue::String { exact: "Eve".into(), normalized: "eve".into() }]
        }
    );
    assert_eq!(chained.clauses[1].chain, Some(Chain { target_type: "Patient".into(), param: "birthdate".into() }));
    assert!(matches!(chained.clauses[1].values[0], QueryValue::Date { .. }));
}

#[test]
fn has_includes_and_result_parameters() {
    let query = ok(
        "Patient",
        "_has:Observation:patient:code=1234-5&_include=Patient:general-practitioner:Practitioner\
         &_revinclude:iterate=Observation:subject&_count=50&_sort=-birthdate,_lastUpdated,family\
         &_total=accurate&_summary=count&_elements=name,birthDate&_format=json&_pretty=true",
    );
    assert_eq!(query.has.len(), 1);
    assert_eq!((query.has[0].source_type.as_str(), query.has[0].reference_param.as_str()), ("Observation", "patient"));
    assert_eq!(query.has[0].clause.values, [token(None, Some("1234-5"))]);
    assert_eq!(
        query.include,
        [Include {
            source_type: "Patient".into(),
            param: "general-practitioner".into(),
            target_type: Some("Practitioner".into()),
            iterate: false
        }]
    );
    assert_eq!(
        query.revinclude,
        [Include { source_type: "Observation".into(), param: "subject".into(), target_type: None, iterate: true }]
    );
    assert_eq!(query.count, Some(50));
    assert_eq!(
        query.sort,
        [("birthdate".to_string(), true), ("_lastUpdated".to_string(), false), ("family".to_string(), false)]
    );
    assert_eq!(query.total, Some(Total::Accurate));
    assert_eq!(query.summary, Some(Summary::Count));
    assert_eq!(query.elements, ["name", "birthDate"]);
    assert!(query.clauses.is_empty());
}

/// Each bad query: the strict error, and that lenient handling drops it with one warning
/// naming the parameter.
#[test]
fn bad_queries_are_errors_when_strict_and_warnings_when_lenient() {
    let cases: &[(&str, &str, &str)] = &[
        ("Patient", "nonsense=1", "unknown search parameter 'nonsense'"),
        ("Patient", "birthdate=2020-13-01", "invalid value for search parameter 'birthdate': expected a date"),
        ("Patient", "birthdate=yesterday", "invalid value for search parameter 'birthdate'"),
        ("Patient", "family:text=x", "modifier ':text' does not apply to search parameter 'family:text'"),
        ("Patient", "birthdate:exact=2020", "modifier ':exact' does not apply"),
        ("Patient", "family:fuzzy=x", "modifier ':fuzzy' does not apply"),
        ("Observation", "subject:Medication=x", "modifier ':Medication' does not apply"),
        ("Observation", "code:in=http://vs", "not supported: :in needs a terminology service"),
        ("Patient", "identifier:of-type=urn:t|MR", "expected [type system]|[type code]|[identifier value]"),
        ("Patient", "_count=100000", "_count 100000 is larger than the largest page, 1000"),
        ("Patient", "_count=-1", "invalid value for search parameter '_count'"),
        ("Patient", "_sort=nonsense", "cannot sort by 'nonsense'"),
        ("Observation", "_sort=code-value-quantity", "cannot sort by 'code-value-quantity'"),
        (
            "Observation",
            "code-value-quantity=x$5",
            "search parameter 'code-value-quantity' is not supported: composite",
        ),
        ("Location", "near=1|2|3", "search parameter 'near' is not supported: special"),
        ("Patient", "_total=some", "expected none, estimate or accurate"),
        ("Patient", "_summary=maybe", "expected true, text, data, count or false"),
        ("Patient", "_elements=name,nonsense", "'nonsense' is not an element of Patient"),
        ("Patient", "_include=Observation:subject", "the source type must be Patient"),
        ("Patient", "_include=Patient:family", "'family' is not a reference parameter of Patient"),
        ("Patient", "_include=*", "wildcard includes are not supported"),
        ("Patient", "_revinclude=Observation:performer:Device", "does not refer to 'Device'"),
        ("Observation", "subject.name=x", "name one, as in subject:Patient.name"),
        ("Observation", "subject:Patient.organization.name=x", "only one level of chaining"),
        ("Observation", "subject:Patient.nonsense=x", "unknown search parameter 'subject:Patient.nonsense'"),
        ("Observation", "code.name=x", "'code' is not a reference parameter"),
        ("Patient", "_has:Observation:device:code=x", "does not refer to Patient"),
        (
            "Patient",
            "_has:Observation:patient:nonsense=x",
            "unknown search parameter '_has:Observation:patient:nonsense'",
        ),
        ("Patient", "_has:Observation:patient:_has:Encounter:patient:status=x", "nested _has"),
        ("Patient", "gender:missing=maybe", "expected true or false"),
        ("Patient", "general-practitioner=not an id", "expected an id, Type/id or an absolute URL"),
        ("Observation", "value-quantity=5.4|mg", "expected [prefix]number[|system|code]"),
        ("Observation", "code=a|b|c", "expected [system]|[code]"),
        ("Observation", "code=|", "a token needs a system or a code"),
        ("RiskAssessment", "probability=high", "expected a number"),
        ("Patient", "family=a,,b", "an empty value in a comma-separated list"),
        ("Patient", "_type=Patient", "search parameter '_type' is not supported"),
        ("Patient", "_text=x", "search parameter '_text' is not supported"),
    ];
    for (resource_type, query, expected) in cases {
        let error = strict(resource_type, query).expect_err(query);
        assert!(error.to_string().contains(expected), "{query}: {error}");
        let (lenient, warnings) = parse_query(resource_type, &pairs(query), Handling::Lenient)
            .unwrap_or_else(|error| panic!("{query}: {error}"));
        assert_eq!(warnings.len(), 1, "{query}: {warnings:?}");
        let name = query.split('=').next().unwrap_or_default();
        assert_eq!(warnings[0].parameter, name, "{query}");
        assert!(
            lenient.clauses.is_empty() && lenient.has.is_empty() && lenient.include.is_empty(),
            "{query}: {lenient:?}"
        );
        assert!(lenient.sort.is_empty() && lenient.elements.is_empty() && lenient.total.is_none(), "{query}");
    }
}

#[test]
fn messages_never_repeat_the_value() {
    let secret = "Jane-Doe-1970";
    for query in [
        format!("birthdate={secret}"),
        format!("family:fuzzy={secret}"),
        format!("general-practitioner={secret} x"),
        format!("_sort={secret}"),
    ] {
        let error = strict("Patient", &query).expect_err(&query);
        if query.starts_with("_sort") {
            continue; // names the parameter it cannot sort by, which is not a value
        }
        assert!(!error.to_string().contains(secret), "{error}");
    }
}

#[test]
fn lenient_clamps_a_large_count_and_keeps_the_rest() {
    let (query, warnings) =
        parse_query("Patient", &pairs("_count=5000&family=smith&nonsense=1&family="), Handling::Lenient)
            .expect("parses");
    assert_eq!(query.count, Some(SEARCH_COUNT_MAX));
    assert_eq!(query.clauses.len(), 1);
    let parameters: Vec<&str> = warnings.iter().map(|warning| warning.parameter.as_str()).collect();
    assert_eq!(parameters, ["_count", "nonsense", "family"]);
    assert_eq!(Handling::from_prefer("return=representation, handling=strict"), Handling::Strict);
    assert_eq!(Handling::from_prefer("handling=lenient"), Handling::Lenient);
    assert_eq!(Handling::from_prefer(""), Handling::Lenient);
}

#[test]
fn limits_hold_whatever_the_handling() {
    let many: Vec<String> = (0..=SEARCH_PARAMETERS_MAX).map(|index| format!("family=a{index}")).collect();
    let many = many.join("&");
    let values: Vec<String> = (0..=SEARCH_VALUES_MAX).map(|index| format!("a{index}")).collect();
    let wide = format!("family={}", values.join(","));
    for handling in [Handling::Strict, Handling::Lenient] {
        assert!(matches!(parse_query("Patient", &pairs(&many), handling), Err(SearchError::TooMany { .. })));
        assert!(matches!(parse_query("Patient", &pairs(&wide), handling), Err(SearchError::TooMany { .. })));
        assert!(matches!(parse_query("Nonsense", &pairs("a=b"), handling), Err(SearchError::UnknownType { .. })));
    }
    let includes: Vec<&str> = std::iter::repeat_n("_revinclude=Observation:subject", 17).collect();
    assert!(matches!(strict("Patient", &includes.join("&")), Err(SearchError::TooMany { .. })));
}

/// Arbitrary query strings never panic the parser or the evaluator: each is parsed under
/// both handlings, and every clause parsed is evaluated on a resource.
#[test]
fn arbitrary_queries_are_refused_or_parsed_never_panic() {
    const NAMES: &[&str] = &[
        "family",
        "birthdate",
        "code",
        "subject",
        "value-quantity",
        "_id",
        "_lastUpdated",
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_has",
        "_summary",
        "_elements",
        "url",
        "probability",
        "patient",
        "identifier",
    ];
    const PIECES: &[&str] = &[
        ":",
        ".",
        "|",
        ",",
        "\\",
        "$",
        "=",
        "-",
        "ge",
        "ap",
        "sa",
        "eb",
        "ne",
        "2020",
        "-01",
        "-13",
        "T10:00",
        "Z",
        "+01:00",
        "1e",
        "5.4",
        "e9999",
        "Patient",
        "Observation",
        "/",
        "p1",
        "_history",
        "missing",
        "exact",
        "not",
        "text",
        "identifier",
        "Patient.name",
        "é",
        "\u{0301}",
        "ﬁ",
        " ",
        "http://x",
        "true",
        "",
        "999999999999",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % u64::try_from(bound).unwrap_or(1)).unwrap_or(0)
    };
    let resources = [
        serde_json::json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Émile"}], "birthDate": "2020-01"}),
        serde_json::json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 5.4}}),
    ];
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut name = NAMES[next(NAMES.len())].to_string();
        let mut value = String::new();
        for _ in 0..next(4) {
            name.push_str(PIECES[next(PIECES.len())]);
        }
        for _ in 0..next(6) {
            value.push_str(PIECES[next(PIECES.len())]);
        }
        let resource = &resources[next(resources.len())];
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        for handling in [Handling::Strict, Handling::Lenient] {
            if let Ok((query, _)) = parse_query(resource_type, &[(name.clone(), value.clone())], handling) {
                parsed += 1;
                for clause in &query.clauses {
                    let _ = medvault_fhir::search::matches(resource, clause);
                }
            }
        }
    }
    assert!(parsed > 10_000, "only {parsed} parsed");
}
