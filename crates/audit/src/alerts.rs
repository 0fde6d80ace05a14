//! Alert rules over the stream of audit records, with time taken from the records and
//! memory bounded whatever the input.
//!
//! The caller feeds every record to [`AlertEngine::observe`] in commit order and acts on
//! the alerts it returns (log them as `medvault::alert`, audit them as
//! [`EventKind::AlertRaised`], export them with [`crate::export::syslog_alert`]).
//!
//! # Rules
//!
//! - **Unusual patient volume** ([`AlertKind::UnusualPatientVolume`]). Per agent, the
//!   distinct patients touched by clinical access (every [`EventKind::is_clinical_access`]
//!   record, whatever its outcome: probing is as telling as reading) are counted per clock
//!   hour (UTC, `recorded_ms / 3,600,000`). The agent's *usual level* is the mean of its
//!   counts over the active hours (at least one patient) of the last
//!   [`AlertPolicy::baseline_hours`] hours; hours without activity are left out so that
//!   nights and weekends do not dilute it. The threshold of the current hour is
//!   `max(hourly_patients_floor, ⌊hourly_patients_factor × usual⌋)`, at most
//!   [`ALERT_HOURLY_PATIENTS_MAX`]; an agent without history gets the floor. One alert
//!   when the hour's count goes above the threshold, then none until the next hour. An
//!   hour that raised the alert enters the history at its threshold, not its count: a
//!   burst raises the usual level by no more than was already allowed, while someone who
//!   really works at a higher pace is learned after a few hours (each of which alerts).
//! - **Canary access** ([`AlertKind::CanaryAccess`]): every record of any kind that names a
//!   canary patient (as `is_canary` says) raises one alert per canary patient it names.
//! - **Mass modification** ([`AlertKind::MassModification`]): updates and deletes by one
//!   agent (records of kind [`EventKind::Update`] or [`EventKind::Delete`], one each, any
//!   outcome) counted over a sliding minute (the current second and the 59 before it).
//!   One alert when the count goes above [`AlertPolicy::mass_change_per_minute`], then
//!   none for 60 s. Writes inside a transaction or batch count only if the caller audits
//!   them as their own `Update`/`Delete` records.
//! - **Repeated break-glass** ([`AlertKind::RepeatedBreakGlass`]): more than
//!   [`AlertPolicy::break_glass_per_day`] [`EventKind::BreakGlass`] records by one agent
//!   within 24 hours: each one beyond the limit alerts.
//!
//! [`AlertEngine::lockdown_recommended`] is true while a mass-modification alert is less
//! than [`LOCKDOWN_WINDOW_MS`] old.
//!
//! # Time
//!
//! No clock is read. The engine's time is the latest `recorded_ms` it has seen, and each
//! agent's time never goes backwards: a record older than the agent's last counts as if
//! it came at that time (records of one group commit may arrive slightly out of order).
//!
//! # Memory
//!
//! At most [`ALERT_AGENTS_MAX`] agents are tracked; beyond that the least recently seen is
//! forgotten (it comes back as a new agent, judged against the floor). Only records of
//! clinical access and break-glass create agent state: failed logins under invented names
//! cannot flush the baselines. Per agent: the hour's distinct patients as 64-bit hashes,
//! at most threshold + 1 ≤ [`ALERT_HOURLY_PATIENTS_MAX`] + 1 of them (counting stops at the
//! alert); one `u16` per baseline hour (≤ [`ALERT_BASELINE_HOURS_MAX`]); 60 per-second
//! counters; at most [`ALERT_BREAK_GLASS_PER_DAY_MAX`] + 1 break-glass times. Worst case
//! about 19 KiB per agent at the default policy (the hash set of 1,001 patients dominates)
//! and 30 KiB at the extremes of the policy, so at most 190 MiB (300 MiB) for the engine;
//! an agent that stays below its threshold of 30–100 patients takes 1–2 KiB.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use crate::record::{AuditRecord, EventKind};

/// The most agents whose state is kept (least recently seen forgotten first).
pub const ALERT_AGENTS_MAX: usize = 10_000;
/// The highest threshold of distinct patients per hour: above this many, an agent always
/// alerts, whatever its history (and no more patients are held in memory).
pub const ALERT_HOURLY_PATIENTS_MAX: u32 = 1_000;
/// The longest baseline: 4 weeks of hours.
pub const ALERT_BASELINE_HOURS_MAX: u32 = 24 * 7 * 4;
/// The highest break-glass limit per day (bounds the times kept per agent).
pub const ALERT_BREAK_GLASS_PER_DAY_MAX: u32 = 1_000;
/// How long after a mass-modification alert a lockdown is recommended.
pub const LOCKDOWN_WINDOW_MS: i64 = 15 * MINUTE_MS;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Seconds in the sliding window of the mass-modification rule.
const WINDOW_SECONDS: usize = 60;

/// The thresholds of the rules. Values out of range are brought into range by
/// [`AlertEngine::new`] (see each field).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlertPolicy {
    /// How many times its usual level an agent may read in an hour. Not finite or not
    /// positive: the default.
    pub hourly_patients_factor: f64,
    /// Never alert at or below this many distinct patients in an hour; the threshold for
    /// agents without history. At most [`ALERT_HOURLY_PATIENTS_MAX`].
    pub hourly_patients_floor: u32,
    /// Hours of history behind the usual level, 1 ..= [`ALERT_BASELINE_HOURS_MAX`].
    pub baseline_hours: u32,
    /// Updates and deletes one agent may make in a minute; at least 1.
    pub mass_change_per_minute: u32,
    /// Break-glass grants one agent may use in 24 hours, at most
    /// [`ALERT_BREAK_GLASS_PER_DAY_MAX`].
    pub break_glass_per_day: u32,
}

impl AlertPolicy {
    /// Three times the usual hourly level, never at or below 30 patients, over a week;
    /// 100 updates and deletes a minute; 3 break-glass grants a day.
    pub const DEFAULT: AlertPolicy = AlertPolicy {
        hourly_patients_factor: 3.0,
        hourly_patients_floor: 30,
        baseline_hours: 24 * 7,
        mass_change_per_minute: 100,
        break_glass_per_day: 3,
    };

    fn bounded(self) -> AlertPolicy {
        let factor = self.hourly_patients_factor;
        AlertPolicy {
            hourly_patients_factor: if factor.is_finite() && factor > 0.0 {
                factor
            } else {
                AlertPolicy::DEFAULT.hourly_patients_factor
            },
            hourly_patients_floor: self.hourly_patients_floor.min(ALERT_HOURLY_PATIENTS_MAX),
            baseline_hours: self.baseline_hours.clamp(1, ALERT_BASELINE_HOURS_MAX),
            mass_change_per_minute: self.mass_change_per_minute.max(1),
            break_glass_per_day: self.break_glass_per_day.min(ALERT_BREAK_GLASS_PER_DAY_MAX),
        }
    }
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy::DEFAULT
    }
}

/// One fired rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    /// The agent's name.
    pub agent: String,
    /// When it fired: the time of the record that fired it (never earlier than the
    /// agent's previous record).
    pub at_ms: i64,
    /// What was seen, for people: counts, thresholds, the canary patient and request id.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    UnusualPatientVolume,
    CanaryAccess,
    MassModification,
    RepeatedBreakGlass,
}

impl AlertKind {
    /// A stable lower-case name (`unusual-patient-volume`, `canary-access`,
    /// `mass-modification`, `repeated-break-glass`).
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::UnusualPatientVolume => "unusual-patient-volume",
            AlertKind::CanaryAccess => "canary-access",
            AlertKind::MassModification => "mass-modification",
            AlertKind::RepeatedBreakGlass => "repeated-break-glass",
        }
    }
}

/// The rules and their state. See the module documentation.
#[derive(Debug)]
pub struct AlertEngine {
    policy: AlertPolicy,
    agents: HashMap<String, AgentState>,
    /// The latest `recorded_ms` seen.
    now_ms: i64,
    last_mass_modification_ms: Option<i64>,
}

impl AlertEngine {
    pub fn new(policy: AlertPolicy) -> AlertEngine {
        AlertEngine {
            policy: policy.bounded(),
            agents: HashMap::new(),
            now_ms: i64::MIN,
            last_mass_modification_ms: None,
        }
    }

    /// The policy in force (after bringing values into range).
    pub fn policy(&self) -> AlertPolicy {
        self.policy
    }

    /// Runs the rules on one record; the alerts it fires, in rule order (canary, volume,
    /// mass modification, break-glass).
    pub fn observe(&mut self, record: &AuditRecord, is_canary: &dyn Fn(&str) -> bool) -> Vec<Alert> {
        self.now_ms = self.now_ms.max(record.recorded_ms);
        let mut alerts = canary_alerts(record, is_canary);
        let counts_volume = record.kind.is_clinical_access();
        let counts_change = matches!(record.kind, EventKind::Update | EventKind::Delete);
        let is_break_glass = record.kind == EventKind::BreakGlass;
        if !(counts_volume || counts_change || is_break_glass) {
            return alerts;
        }
        let policy = self.policy;
        let state = self.agent_state(&record.agent.name, record.recorded_ms);
        let at_ms = state.last_seen_ms.max(record.recorded_ms);
        state.last_seen_ms = at_ms;
        let agent = &record.agent.name;
        if counts_volume {
            alerts.extend(state.volume.observe(&policy, at_ms, &record.patients).map(|detail| Alert {
                kind: AlertKind::UnusualPatientVolume,
                agent: agent.clone(),
                at_ms,
                detail,
            }));
        }
        let mass_modification = if counts_change { state.changes.observe(&policy, at_ms) } else { None };
        let break_glass = if is_break_glass { state.break_glass.observe(&policy, at_ms) } else { None };
        if let Some(detail) = mass_modification {
            self.last_mass_modification_ms = Some(at_ms);
            alerts.push(Alert { kind: AlertKind::MassModification, agent: agent.clone(), at_ms, detail });
        }
        if let Some(detail) = break_glass {
            alerts.push(Alert { kind: AlertKind::RepeatedBreakGlass, agent: agent.clone(), at_ms, detail });
        }
        alerts
    }

    /// Whether a mass-modification alert fired less than [`LOCKDOWN_WINDOW_MS`] before the
    /// latest record seen. (With no records since, it stays true: silence after a mass
    /// deletion is no reason to relax.)
    pub fn lockdown_recommended(&self) -> bool {
        self.lockdown_recommended_at(self.now_ms)
    }

    /// Whether a mass-modification alert fired less than [`LOCKDOWN_WINDOW_MS`] before
    /// `now_ms`.
    pub fn lockdown_recommended_at(&self, now_ms: i64) -> bool {
        self.last_mass_modification_ms.is_some_and(|at_ms| now_ms.saturating_sub(at_ms) < LOCKDOWN_WINDOW_MS)
    }

    /// How many agents have state (at most [`ALERT_AGENTS_MAX`]).
    pub fn agents_tracked(&self) -> usize {
        self.agents.len()
    }

    fn agent_state(&mut self, name: &str, at_ms: i64) -> &mut AgentState {
        if !self.agents.contains_key(name) {
            if self.agents.len() >= ALERT_AGENTS_MAX {
                self.forget_least_recently_seen();
            }
            self.agents.insert(name.to_owned(), AgentState::new(&self.policy, at_ms));
        }
        // Inserted above when missing.
        self.agents.get_mut(name).expect("agent state present")
    }

    /// Forgets the agent seen longest ago (ties: the smallest name, so that the choice does
    /// not depend on the map's order). A linear scan: it runs only when a new agent
    /// arrives while the map is full.
    fn forget_least_recently_seen(&mut self) {
        let oldest = self
            .agents
            .iter()
            .min_by(|(name_a, a), (name_b, b)| a.last_seen_ms.cmp(&b.last_seen_ms).then_with(|| name_a.cmp(name_b)))
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.agents.remove(&name);
        }
    }
}

fn canary_alerts(record: &AuditRecord, is_canary: &dyn Fn(&str) -> bool) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for patient in &record.patients {
        if seen.insert(patient) && is_canary(patient) {
            alerts.push(Alert {
                kind: AlertKind::CanaryAccess,
                agent: record.agent.name.clone(),
                at_ms: record.recorded_ms,
                detail: format!(
                    "canary patient {patient} touched by {} (request {})",
                    record.kind.name(),
                    record.request_id
                ),
            });
        }
    }
    alerts
}

#[derive(Debug)]
struct AgentState {
    last_seen_ms: i64,
    volume: Volume,
    changes: Changes,
    break_glass: BreakGlass,
}

impl AgentState {
    fn new(policy: &AlertPolicy, at_ms: i64) -> AgentState {
        AgentState {
            last_seen_ms: at_ms,
            volume: Volume::new(policy),
            changes: Changes::default(),
            break_glass: BreakGlass::default(),
        }
    }
}

/// Distinct patients per hour against the agent's usual level.
#[derive(Debug)]
struct Volume {
    /// The current hour (`ms / HOUR_MS`); `None` before the first record.
    hour: Option<i64>,
    /// Alert above this many distinct patients in the current hour.
    threshold: u32,
    /// The usual level behind `threshold` (for the alert's detail).
    usual: f64,
    /// Hashes of the current hour's distinct patients; at most `threshold + 1`.
    patients: HashSet<u64>,
    alerted: bool,
    /// Distinct patients of past hours (the threshold for an hour that alerted), indexed by
    /// `hour % len`; 0 for an hour without activity or outside the window.
    past: Vec<u16>,
}

/// Capacity kept by an hour's set after it is cleared (larger sets give memory back).
const PATIENT_SET_CAPACITY_KEPT: usize = 64;

impl Volume {
    fn new(policy: &AlertPolicy) -> Volume {
        let hours = usize::try_from(policy.baseline_hours).unwrap_or(1).max(1);
        Volume {
            hour: None,
            threshold: policy.hourly_patients_floor,
            usual: 0.0,
            patients: HashSet::new(),
            alerted: false,
            past: vec![0; hours],
        }
    }

    /// Counts `patients` at `at_ms`; the alert's detail when this record crosses the
    /// threshold.
    fn observe(&mut self, policy: &AlertPolicy, at_ms: i64, patients: &[String]) -> Option<String> {
        let hour = at_ms.div_euclid(HOUR_MS);
        if self.hour != Some(hour) {
            self.start_hour(policy, hour);
        }
        if self.alerted {
            return None;
        }
        let limit = usize::try_from(self.threshold).unwrap_or(usize::MAX);
        for patient in patients {
            if self.patients.len() > limit {
                break;
            }
            self.patients.insert(patient_hash(patient));
        }
        if self.patients.len() <= limit {
            return None;
        }
        self.alerted = true;
        let hour_start = medvault_base::time::format_instant(hour.saturating_mul(HOUR_MS));
        Some(format!(
            "more than {} distinct patients in the hour from {hour_start} (usual {:.1} an hour)",
            self.threshold, self.usual
        ))
    }

    /// Files the finished hour into the history and computes the new hour's threshold.
    fn start_hour(&mut self, policy: &AlertPolicy, hour: i64) {
        let slots = self.past.len();
        let slot = |hour: i64| usize::try_from(hour.rem_euclid(i64::try_from(slots).unwrap_or(1))).unwrap_or(0);
        if let Some(previous) = self.hour {
            let gap = hour.saturating_sub(previous);
            if gap > i64::try_from(slots).unwrap_or(i64::MAX) {
                self.past.fill(0);
            } else {
                let count =
                    if self.alerted { u16::try_from(self.threshold) } else { u16::try_from(self.patients.len()) };
                let count = count.unwrap_or(u16::MAX);
                self.past[slot(previous)] = count;
                for idle in previous + 1..hour {
                    self.past[slot(idle)] = 0;
                }
            }
        }
        self.hour = Some(hour);
        self.alerted = false;
        self.patients.clear();
        self.patients.shrink_to(PATIENT_SET_CAPACITY_KEPT);
        let (sum, active) = self
            .past
            .iter()
            .filter(|count| **count > 0)
            .fold((0u64, 0u64), |(sum, n), count| (sum + u64::from(*count), n + 1));
        self.usual = if active == 0 { 0.0 } else { sum as f64 / active as f64 };
        // `as` saturates; the product is finite and non-negative.
        let scaled = (policy.hourly_patients_factor * self.usual).floor() as u32;
        self.threshold = scaled.max(policy.hourly_patients_floor).min(ALERT_HOURLY_PATIENTS_MAX);
    }
}

/// A 64-bit hash of a patient id (SipHash with fixed keys, so the same in every run).
/// Two ids colliding would undercount by one; at a thousand ids the chance is about 3e-14.
fn patient_hash(patient: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    patient.hash(&mut hasher);
    hasher.finish()
}

/// Updates and deletes in the sliding minute.
#[derive(Debug)]
struct Changes {
    /// The latest second counted (`ms / 1000`); `None` before the first change.
    second: Option<i64>,
    /// Changes per second, indexed by `second % 60`.
    per_second: [u32; WINDOW_SECONDS],
    /// The sum of `per_second`.
    total: u64,
    /// No further alert before this time.
    quiet_until_ms: i64,
}

impl Default for Changes {
    fn default() -> Self {
        Changes { second: None, per_second: [0; WINDOW_SECONDS], total: 0, quiet_until_ms: i64::MIN }
    }
}

impl Changes {
    fn observe(&mut self, policy: &AlertPolicy, at_ms: i64) -> Option<String> {
        let second = at_ms.div_euclid(SECOND_MS);
        let slot = |second: i64| usize::try_from(second.rem_euclid(WINDOW_SECONDS as i64)).unwrap_or(0);
        match self.second {
            Some(previous) if second.saturating_sub(previous) >= WINDOW_SECONDS as i64 => {
                self.per_second = [0; WINDOW_SECONDS];
                self.total = 0;
            }
            Some(previous) => {
                for passed in previous + 1..=second {
                    self.total -= u64::from(self.per_second[slot(passed)]);
                    self.per_second[slot(passed)] = 0;
                }
            }
            None => {}
        }
        self.second = Some(second);
        self.per_second[slot(second)] = self.per_second[slot(second)].saturating_add(1);
        self.total += 1;
        if self.total <= u64::from(policy.mass_change_per_minute) || at_ms < self.quiet_until_ms {
            return None;
        }
        self.quiet_until_ms = at_ms.saturating_add(MINUTE_MS);
        Some(format!("{} updates and deletes within a minute (limit {})", self.total, policy.mass_change_per_minute))
    }
}

/// Break-glass times within the last 24 hours.
#[derive(Debug, Default)]
struct BreakGlass {
    /// At most `break_glass_per_day + 1` times, oldest first.
    times_ms: VecDeque<i64>,
}

impl BreakGlass {
    fn observe(&mut self, policy: &AlertPolicy, at_ms: i64) -> Option<String> {
        while self.times_ms.front().is_some_and(|first| at_ms.saturating_sub(*first) >= DAY_MS) {
            self.times_ms.pop_front();
        }
        self.times_ms.push_back(at_ms);
        let limit = usize::try_from(policy.break_glass_per_day).unwrap_or(usize::MAX);
        while self.times_ms.len() > limit + 1 {
            self.times_ms.pop_front();
        }
        (self.times_ms.len() > limit).then(|| format!("break-glass used more than {limit} times within 24 hours"))
    }
}
