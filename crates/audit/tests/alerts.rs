//! The alert rules with simulated time: each fires on its scenario, once, and stays quiet
//! on normal traffic; memory stays bounded.

use medvault_audit::alerts::{
    Alert, AlertEngine, AlertKind, AlertPolicy, ALERT_AGENTS_MAX, ALERT_HOURLY_PATIENTS_MAX, LOCKDOWN_WINDOW_MS,
};
use medvault_audit::{Agent, AuditRecord, EventKind, Outcome};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn no_canary(_: &str) -> bool {
    false
}

fn agent(name: &str) -> Agent {
    Agent { name: name.into(), role: "clinician".into(), user_id: Some(1), purpose_of_use: None, address: None }
}

fn event(kind: EventKind, name: &str, at_ms: i64, patients: &[String]) -> AuditRecord {
    let mut record = AuditRecord::new(at_ms, kind, agent(name), "req");
    record.patients = patients.to_vec();
    record
}

fn read(engine: &mut AlertEngine, name: &str, at_ms: i64, patient: &str) -> Vec<Alert> {
    engine.observe(&event(EventKind::Read, name, at_ms, &[patient.to_owned()]), &no_canary)
}

/// `count` distinct patients read by `name` in the hour starting at `hour_ms`, one
/// read a minute or faster; the alerts raised.
fn read_hour(engine: &mut AlertEngine, name: &str, hour_ms: i64, prefix: &str, count: usize) -> Vec<Alert> {
    let step_ms = (HOUR_MS - 1) / (count.max(1) as i64);
    (0..count).flat_map(|i| read(engine, name, hour_ms + i as i64 * step_ms, &format!("{prefix}-{i}"))).collect()
}

/// A clinician's normal week: 20 patients an hour, 08:00–16:00, every day for 7 days.
fn normal_week(engine: &mut AlertEngine, name: &str) {
    for day in 0..7 {
        for hour in 8..16 {
            let alerts = read_hour(engine, name, T0 + day * DAY_MS + hour * HOUR_MS, &format!("d{day}h{hour}"), 20);
            assert!(alerts.is_empty(), "a normal hour alerted: {alerts:?}");
        }
    }
}

fn kinds(alerts: &[Alert]) -> Vec<AlertKind> {
    alerts.iter().map(|alert| alert.kind).collect()
}

#[test]
fn a_clinician_reading_at_the_usual_pace_is_quiet_and_a_burst_alerts_once() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    normal_week(&mut engine, "dr.a");
    let day8 = T0 + 7 * DAY_MS;

    // A busier hour than usual: 25 patients. Quiet.
    assert!(read_hour(&mut engine, "dr.a", day8 + 8 * HOUR_MS, "busy", 25).is_empty());

    // 200 patients in an hour: one alert, when the count passes 3 × 20 = 60.
    let alerts = read_hour(&mut engine, "dr.a", day8 + 9 * HOUR_MS, "burst", 200);
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
    let alert = &alerts[0];
    assert_eq!(alert.agent, "dr.a");
    assert!(
        alert.detail.starts_with("more than 60 distinct patients in the hour from 2026-01-08T09:00:00.000Z"),
        "{}",
        alert.detail
    );
    let step_ms = (HOUR_MS - 1) / 200;
    assert_eq!(alert.at_ms, day8 + 9 * HOUR_MS + 60 * step_ms, "fired by the 61st patient");

    // The burst entered the history at its threshold (60), not at 200: the usual level is
    // (56 × 20 + 25 + 60) / 58 = 20.8 and the threshold 62 (it would be 69 had the burst
    // counted in full).
    let alerts = read_hour(&mut engine, "dr.a", day8 + 10 * HOUR_MS, "after", 63);
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
    assert!(alerts[0].detail.starts_with("more than 62 "), "{}", alerts[0].detail);
    assert!(alerts[0].detail.ends_with("(usual 20.8 an hour)"), "{}", alerts[0].detail);
}

#[test]
fn distinct_patients_count_not_reads() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    for i in 0..5_000 {
        assert!(read(&mut engine, "dr.b", T0 + i * 100, &format!("p{}", i % 30)).is_empty());
    }
    // One record naming many patients counts each (a search page).
    let page: Vec<String> = (0..31).map(|i| format!("q{i}")).collect();
    let alerts = engine.observe(&event(EventKind::SearchType, "dr.b2", T0, &page), &no_canary);
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
}

#[test]
fn a_new_account_is_judged_against_the_floor() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    let alerts = read_hour(&mut engine, "new", T0, "p", 30);
    assert!(alerts.is_empty(), "30 is the floor: never alert at or below it");
    let alerts = read(&mut engine, "new", T0 + HOUR_MS - 1, "p-30");
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
    assert!(alerts[0].detail.contains("usual 0.0"), "{}", alerts[0].detail);
}

#[test]
fn a_heavy_user_is_learned_and_the_threshold_stops_at_the_cap() {
    let policy = AlertPolicy { hourly_patients_factor: 100.0, ..AlertPolicy::DEFAULT };
    let mut engine = AlertEngine::new(policy);
    // The first hour of 50 alerts (the floor is 30); then 50 an hour is learned.
    let alerts: Vec<Alert> = (0..24)
        .flat_map(|hour| read_hour(&mut engine, "ward-clerk", T0 + hour * HOUR_MS, &format!("h{hour}"), 50))
        .collect();
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
    assert!(alerts[0].at_ms < T0 + HOUR_MS);
    // 100 × 50 = 5,000, capped at ALERT_HOURLY_PATIENTS_MAX.
    let start = T0 + 24 * HOUR_MS;
    let cap = ALERT_HOURLY_PATIENTS_MAX as usize;
    assert!(read_hour(&mut engine, "ward-clerk", start, "cap", cap).is_empty());
    let alerts = read(&mut engine, "ward-clerk", start + HOUR_MS - 1, "one-more");
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
}

#[test]
fn the_baseline_forgets_hours_older_than_its_window() {
    let policy = AlertPolicy { baseline_hours: 24, ..AlertPolicy::DEFAULT };
    let mut engine = AlertEngine::new(policy);
    // A heavy day of 100 an hour: the first two hours alert (thresholds 30, then 3 × 30),
    // enter the history at 30 and 90, and the pace is learned: (30 + 90 + 6 × 100) / 8 = 90.
    let alerts: Vec<Alert> =
        (0..8).flat_map(|hour| read_hour(&mut engine, "dr.c", T0 + hour * HOUR_MS, &format!("h{hour}"), 100)).collect();
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume; 2]);
    assert!(alerts[1].at_ms < T0 + 2 * HOUR_MS);
    assert!(read_hour(&mut engine, "dr.c", T0 + 8 * HOUR_MS, "still", 270).is_empty());
    assert_eq!(kinds(&read(&mut engine, "dr.c", T0 + 9 * HOUR_MS - 1, "one-more")), [AlertKind::UnusualPatientVolume]);
    // Two days later the heavy day is outside the window: back to the floor.
    let alerts = read_hour(&mut engine, "dr.c", T0 + 2 * DAY_MS + 8 * HOUR_MS, "later", 31);
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
}

#[test]
fn every_canary_access_alerts() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    let is_canary = |patient: &str| patient == "canary-1" || patient == "canary-2";
    for i in 0..3 {
        let record = event(EventKind::Read, "dr.d", T0 + i * SECOND_MS, &["canary-1".to_owned()]);
        let alerts = engine.observe(&record, &is_canary);
        assert_eq!(kinds(&alerts), [AlertKind::CanaryAccess], "access {i}");
        assert_eq!(alerts[0].at_ms, T0 + i * SECOND_MS);
        assert!(alerts[0].detail.contains("canary-1") && alerts[0].detail.contains("read"), "{}", alerts[0].detail);
    }
    // One alert per canary patient in a record, not per mention.
    let page = ["canary-1", "p1", "canary-2", "canary-1"].map(str::to_owned);
    let alerts = engine.observe(&event(EventKind::SearchSystem, "dr.d", T0 + 10 * SECOND_MS, &page), &is_canary);
    assert_eq!(kinds(&alerts), [AlertKind::CanaryAccess, AlertKind::CanaryAccess]);
    // Any kind of record that names one: a write, a break-glass grant.
    for kind in [EventKind::Update, EventKind::BreakGlass] {
        let alerts = engine.observe(&event(kind, "dr.d", T0 + 20 * SECOND_MS, &["canary-2".to_owned()]), &is_canary);
        assert_eq!(kinds(&alerts), [AlertKind::CanaryAccess], "{kind:?}");
    }
    // Other patients: quiet.
    assert!(engine
        .observe(&event(EventKind::Read, "dr.d", T0 + 30 * SECOND_MS, &["p2".to_owned()]), &is_canary)
        .is_empty());
}

fn change(engine: &mut AlertEngine, kind: EventKind, name: &str, at_ms: i64) -> Vec<Alert> {
    engine.observe(&event(kind, name, at_ms, &[]), &no_canary)
}

#[test]
fn a_nurse_updating_steadily_is_quiet_and_a_script_deleting_en_masse_alerts_once() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    // 50 updates a minute for two hours.
    for i in 0..50 * 120 {
        assert!(change(&mut engine, EventKind::Update, "nurse", T0 + i * (MINUTE_MS / 50)).is_empty());
    }
    assert!(!engine.lockdown_recommended());

    // 500 deletes within one minute: one alert, at the 101st.
    let start = T0 + 3 * HOUR_MS;
    let alerts: Vec<Alert> =
        (0..500).flat_map(|i| change(&mut engine, EventKind::Delete, "script", start + i * 100)).collect();
    assert_eq!(kinds(&alerts), [AlertKind::MassModification]);
    assert_eq!(alerts[0].at_ms, start + 100 * 100);
    assert_eq!(alerts[0].detail, "101 updates and deletes within a minute (limit 100)");
    assert!(engine.lockdown_recommended());

    // Still going in the next minute: one more alert for that window.
    let alerts: Vec<Alert> =
        (500..1_000).flat_map(|i| change(&mut engine, EventKind::Delete, "script", start + i * 100)).collect();
    assert_eq!(kinds(&alerts), [AlertKind::MassModification]);
    assert_eq!(alerts[0].at_ms, start + 100 * 100 + MINUTE_MS);

    // The recommendation lapses LOCKDOWN_WINDOW_MS after the last alert.
    let last_alert_ms = alerts[0].at_ms;
    assert!(engine.lockdown_recommended_at(last_alert_ms + LOCKDOWN_WINDOW_MS - 1));
    assert!(!engine.lockdown_recommended_at(last_alert_ms + LOCKDOWN_WINDOW_MS));
    assert!(read(&mut engine, "someone", last_alert_ms + LOCKDOWN_WINDOW_MS, "p").is_empty());
    assert!(!engine.lockdown_recommended(), "the engine's time moved on with the records");
}

#[test]
fn the_change_window_slides_by_the_second() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    // 100 changes in the first second, then one a minute later: the first 100 have left.
    for i in 0..100 {
        assert!(change(&mut engine, EventKind::Update, "bot", T0 + i).is_empty());
    }
    assert!(change(&mut engine, EventKind::Update, "bot", T0 + MINUTE_MS).is_empty());
    // 100 within the window, then the 101st 59 s after the first: alert.
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    for i in 0..100 {
        assert!(change(&mut engine, EventKind::Delete, "bot", T0 + i).is_empty());
    }
    assert_eq!(
        kinds(&change(&mut engine, EventKind::Delete, "bot", T0 + 59 * SECOND_MS)),
        [AlertKind::MassModification]
    );
    // Creates and reads are not modifications.
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    for i in 0..1_000 {
        assert!(change(&mut engine, EventKind::Create, "importer", T0 + i).is_empty());
    }
}

#[test]
fn failed_modifications_count_too() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    let alerts: Vec<Alert> = (0..101)
        .flat_map(|i| {
            let mut record = event(EventKind::Delete, "probe", T0 + i, &[]);
            record.outcome = Outcome::MinorFailure;
            engine.observe(&record, &no_canary)
        })
        .collect();
    assert_eq!(kinds(&alerts), [AlertKind::MassModification]);
}

#[test]
fn break_glass_more_than_three_times_a_day_alerts() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    let glass = |engine: &mut AlertEngine, at_ms: i64| {
        engine.observe(&event(EventKind::BreakGlass, "dr.e", at_ms, &[format!("p{at_ms}")]), &no_canary)
    };
    for hour in 0..3 {
        assert!(glass(&mut engine, T0 + hour * HOUR_MS).is_empty(), "grant {hour}");
    }
    let alerts = glass(&mut engine, T0 + 3 * HOUR_MS);
    assert_eq!(kinds(&alerts), [AlertKind::RepeatedBreakGlass]);
    assert_eq!(alerts[0].detail, "break-glass used more than 3 times within 24 hours");
    assert_eq!(kinds(&glass(&mut engine, T0 + 4 * HOUR_MS)), [AlertKind::RepeatedBreakGlass], "the 5th too");
    // 24 h after the grants at 0 h and 1 h, three remain within the day (2 h, 3 h, 4 h)…
    // plus this one: still four.
    assert_eq!(kinds(&glass(&mut engine, T0 + DAY_MS + HOUR_MS)), [AlertKind::RepeatedBreakGlass]);
    // A quiet day later: three in a day are fine again.
    let later = T0 + 3 * DAY_MS;
    for hour in 0..3 {
        assert!(glass(&mut engine, later + hour * HOUR_MS).is_empty(), "grant {hour} on a later day");
    }
    // Other agents have their own count.
    assert!(engine.observe(&event(EventKind::BreakGlass, "dr.f", later, &[]), &no_canary).is_empty());
    // "Within 24 hours" is less than 24 hours apart: a grant exactly a day old has left.
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    for at_ms in [T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS, T0 + DAY_MS] {
        assert!(glass(&mut engine, at_ms).is_empty(), "grant at {at_ms}");
    }
    assert_eq!(kinds(&glass(&mut engine, T0 + DAY_MS + 1)), [AlertKind::RepeatedBreakGlass]);
}

#[test]
fn memory_is_bounded_and_the_least_recently_seen_agent_is_forgotten() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    // Two agents with a heavy baseline (threshold 3 × 90 = 270, as above); the alerts of
    // the first hours are not what this test is about.
    for hour in 0..8 {
        for name in ["old", "kept"] {
            read_hour(&mut engine, name, T0 + hour * HOUR_MS, &format!("{name}{hour}"), 100);
        }
    }
    let later = T0 + DAY_MS;
    for i in 0..ALERT_AGENTS_MAX {
        if i == ALERT_AGENTS_MAX / 2 {
            assert!(read(&mut engine, "kept", later + i as i64, "refresh").is_empty());
        }
        assert!(read(&mut engine, &format!("agent-{i}"), later + i as i64, "p").is_empty());
        assert!(engine.agents_tracked() <= ALERT_AGENTS_MAX);
    }
    assert_eq!(engine.agents_tracked(), ALERT_AGENTS_MAX);
    let next_hour = later + 2 * HOUR_MS;
    // "kept" was seen recently: its baseline holds, 200 patients are within it.
    assert!(read_hour(&mut engine, "kept", next_hour, "k", 200).is_empty());
    // "old" was forgotten: judged against the floor again.
    assert_eq!(kinds(&read_hour(&mut engine, "old", next_hour, "o", 200)), [AlertKind::UnusualPatientVolume]);
}

#[test]
fn security_events_under_invented_names_do_not_take_agent_slots() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    for i in 0..20_000 {
        let mut record = event(EventKind::LoginFailure, &format!("guess-{i}"), T0 + i, &[]);
        record.outcome = Outcome::MinorFailure;
        assert!(engine.observe(&record, &no_canary).is_empty());
    }
    assert_eq!(engine.agents_tracked(), 0);
}

#[test]
fn records_out_of_order_count_at_the_agents_latest_time() {
    let mut engine = AlertEngine::new(AlertPolicy::DEFAULT);
    assert!(read(&mut engine, "dr.g", T0 + 2 * HOUR_MS, "p0").is_empty());
    // 30 more, stamped an hour earlier: they land in the current hour, reaching 31.
    let alerts: Vec<Alert> = (1..=30).flat_map(|i| read(&mut engine, "dr.g", T0 + HOUR_MS, &format!("p{i}"))).collect();
    assert_eq!(kinds(&alerts), [AlertKind::UnusualPatientVolume]);
    assert_eq!(alerts[0].at_ms, T0 + 2 * HOUR_MS);
}

#[test]
fn policies_out_of_range_are_brought_into_range() {
    let engine = AlertEngine::new(AlertPolicy {
        hourly_patients_factor: f64::NAN,
        hourly_patients_floor: u32::MAX,
        baseline_hours: 0,
        mass_change_per_minute: 0,
        break_glass_per_day: u32::MAX,
    });
    let policy = engine.policy();
    assert_eq!(policy.hourly_patients_factor, 3.0);
    assert_eq!(policy.hourly_patients_floor, ALERT_HOURLY_PATIENTS_MAX);
    assert_eq!(policy.baseline_hours, 1);
    assert_eq!(policy.mass_change_per_minute, 1);
    assert_eq!(policy.break_glass_per_day, 1_000);
    assert_eq!(AlertPolicy::default(), AlertPolicy::DEFAULT);
    for factor in [f64::INFINITY, -1.0, 0.0] {
        let policy = AlertPolicy { hourly_patients_factor: factor, ..AlertPolicy::DEFAULT };
        assert_eq!(AlertEngine::new(policy).policy().hourly_patients_factor, 3.0, "{factor}");
    }
}

#[test]
fn alert_kind_names_are_stable() {
    assert_eq!(AlertKind::UnusualPatientVolume.name(), "unusual-patient-volume");
    assert_eq!(AlertKind::CanaryAccess.name(), "canary-access");
    assert_eq!(AlertKind::MassModification.name(), "mass-modification");
    assert_eq!(AlertKind::RepeatedBreakGlass.name(), "repeated-break-glass");
}
