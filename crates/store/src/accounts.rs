//! Accounts, sessions and the relationships that authorize clinical access
//! (`docs/format/accounts.md`). The store keeps the rows; the rules (password policy,
//! lockout, TOTP, scopes) live in `medvault-auth` and the server.
//!
//! These tables are SQLite-only for now: when a PostgreSQL engine lands, this module's
//! queries move behind the `Engine` trait like the version queries.

use medvault_crypto::{RecordIdentity, Secret32};
use rusqlite::{params, OptionalExtension, Row};

use crate::{Store, StoreError};

/// A patient compartment token, and the end of the break-glass grant that opens it
/// (`None`: a lasting care relationship).
pub type CareCompartment = ([u8; 32], Option<i64>);

/// One user account as stored. Secrets stay wrapped or hashed.
#[derive(Clone)]
pub struct UserRecord {
    pub user_id: i64,
    pub username: String,
    pub role: String,
    /// `Practitioner/{id}` for clinicians, `Patient/{id}` for patients.
    pub fhir_user: Option<String>,
    /// SMART scopes granted, space-separated.
    pub scopes: String,
    /// Argon2id PHC string.
    pub password: String,
    pub mfa_required: bool,
    pub mfa_enrolled: bool,
    pub mfa_epoch: i64,
    /// The last accepted TOTP time step: a code for it or an earlier one is a replay.
    pub mfa_last_step: Option<i64>,
    pub failures: u32,
    pub last_failure_ms: Option<i64>,
    /// Locked after too many failures, until an administrator unlocks.
    pub locked: bool,
    pub disabled_ms: Option<i64>,
    /// Sessions created before this instant are void (revoke all).
    pub sessions_after_ms: i64,
    pub created_ms: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

/// A new account: the password already hashed, the TOTP secret still to wrap.
pub struct NewUser {
    pub username: String,
    pub role: String,
    pub fhir_user: Option<String>,
    pub scopes: String,
    pub password: String,
    pub mfa_required: bool,
    pub totp_secret: Option<Secret32>,
    pub recovery_digests: Vec<[u8; 32]>,
}

/// A login session, stored by the SHA-256 digest of its token.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub digest: [u8; 32],
    pub user_id: i64,
    pub scopes: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub idle_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// Whether a clinician cares for a patient, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CareRelationship {
    None,
    /// A CareTeam, an Encounter or an assignment: until the rows change.
    Lasting,
    /// Only a break-glass grant, which ends at this instant.
    Until(i64),
}

/// A break-glass grant: one user, one patient, a reason, a time limit, a review.
#[derive(Debug, Clone)]
pub struct BreakGlassRecord {
    pub grant_id: i64,
    pub user_id: i64,
    pub username: String,
    /// `Patient/{id}` and the reason given, opened from their sealed form.
    pub patient: String,
    pub reason: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub reviewed_ms: Option<i64>,
    pub reviewer: Option<String>,
    pub decision: Option<String>,
}

const USER_COLUMNS: &str =
    "user_id, username, role, fhir_user, scopes, password, mfa_required, mfa_wrapped IS NOT NULL,
     mfa_epoch, mfa_last_step, failures, last_failure_ms, locked, disabled_ms, sessions_after_ms, created_ms";

/// [`USER_COLUMNS`] with the `u.` prefix, for joins.
const USER_COLUMNS_QUALIFIED: &str = "u.user_id, u.username, u.role, u.fhir_user, u.scopes, u.password, u.mfa_required,
     u.mfa_wrapped IS NOT NULL, u.mfa_epoch, u.mfa_last_step, u.failures, u.last_failure_ms, u.locked, u.disabled_ms,
     u.sessions_after_ms, u.created_ms";

fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    user_row_at(row, 0)
}

/// A user from [`USER_COLUMNS`] starting at column `at`.
fn user_row_at(row: &Row<'_>, at: usize) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: row.get(at)?,
        username: row.get(at + 1)?,
        role: row.get(at + 2)?,
        fhir_user: row.get(at + 3)?,
        scopes: row.get(at + 4)?,
        password: row.get(at + 5)?,
        mfa_required: row.get(at + 6)?,
        mfa_enrolled: row.get(at + 7)?,
        mfa_epoch: row.get(at + 8)?,
        mfa_last_step: row.get(at + 9)?,
        failures: u32::try_from(row.get::<_, i64>(at + 10)?).unwrap_or(u32::MAX),
        last_failure_ms: row.get(at + 11)?,
        locked: row.get(at + 12)?,
        disabled_ms: row.get(at + 13)?,
        sessions_after_ms: row.get(at + 14)?,
        created_ms: row.get(at + 15)?,
    })
}

fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let digest: Vec<u8> = row.get(0)?;
    Ok(SessionRecord {
        digest: digest.try_into().unwrap_or([0; 32]),
        user_id: row.get(1)?,
        scopes: row.get(2)?,
        created_ms: row.get(3)?,
        last_seen_ms: row.get(4)?,
        idle_ms: row.get(5)?,
        expires_ms: row.get(6)?,
        revoked_ms: row.get(7)?,
    })
}

/// The associated-data binding of a user's TOTP secret: the user and its MFA epoch.
fn user_secret_binding(user_id: i64, epoch: i64) -> Vec<u8> {
    let mut binding = b"user".to_vec();
    binding.extend_from_slice(&user_id.to_be_bytes());
    binding.extend_from_slice(&epoch.to_be_bytes());
    binding
}

impl Store {
    /// Creates a user; fails with `AlreadyExists` if the name is taken.
    pub fn create_user(&self, user: NewUser) -> Result<i64, StoreError> {
        let now_ms = self.clock.now_ms();
        let username = user.username.clone();
        // The secret is wrapped bound to the user id, known only after the insert.
        let NewUser { totp_secret, .. } = &user;
        let keyring_wrap = totp_secret.as_ref().map(|secret| Secret32::from_bytes(*secret.expose_secret()));
        let user_id = self.engine.execute(Box::new({
            let user = NewUser { totp_secret: None, ..user };
            move |connection| {
                let exists: Option<i64> = connection
                    .query_row("SELECT user_id FROM users WHERE username = ?1", [&user.username], |row| row.get(0))
                    .optional()?;
                if exists.is_some() {
                    return Err(StoreError::Conflict(format!("a user named '{}' already exists", user.username)));
                }
                connection.execute(
                    "INSERT INTO users (username, role, fhir_user, scopes, password, mfa_required, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        user.username,
                        user.role,
                        user.fhir_user,
                        user.scopes,
                        user.password,
                        user.mfa_required,
                        now_ms
                    ],
                )?;
                let user_id = connection.last_insert_rowid();
                for digest in &user.recovery_digests {
                    connection.execute(
                        "INSERT INTO recovery_codes (user_id, digest) VALUES (?1, ?2)",
                        params![user_id, &digest[..]],
                    )?;
                }
                Ok(user_id)
            }
        }))?;
        if let Some(secret) = keyring_wrap {
            if let Err(error) = self.set_totp_secret(user_id, 0, &secret) {
                // Never leave an account that demands a factor it cannot check.
                let _ = self.engine.execute(Box::new(move |c| {
                    c.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])?;
                    Ok(i64::try_from(c.execute("DELETE FROM users WHERE user_id = ?1", [user_id])?).unwrap_or(0))
                }));
                return Err(error);
            }
        }
        tracing::info!(target: "medvault::security", username = %username, "user created");
        Ok(user_id)
    }

    fn set_totp_secret(&self, user_id: i64, epoch: i64, secret: &Secret32) -> Result<(), StoreError> {
        let wrapped = self.keyring.wrap_user_secret(secret, &user_secret_binding(user_id, epoch))?;
        self.engine.execute(Box::new(move |c| {
            let changed = c.execute(
                "UPDATE users SET mfa_wrapped = ?2, mfa_epoch = ?3, mfa_last_step = NULL WHERE user_id = ?1",
                params![user_id, wrapped, epoch],
            )?;
            Ok(i64::try_from(changed).unwrap_or(0))
        }))?;
        Ok(())
    }

    /// Replaces a user's TOTP secret and recovery codes (a new epoch: the old secret no
    /// longer unwraps) and ends every session of the user.
    pub fn reset_mfa(
        &self,
        user_id: i64,
        secret: &Secret32,
        recovery_digests: Vec<[u8; 32]>,
    ) -> Result<(), StoreError> {
        let user = self.user_by_id(user_id)?.ok_or_else(|| StoreError::Missing("the user".into()))?;
        let epoch = user.mfa_epoch + 1;
        let wrapped = self.keyring.wrap_user_secret(secret, &user_secret_binding(user_id, epoch))?;
        let now_ms = self.clock.now_ms();
        self.engine.execute(Box::new(move |c| {
            c.execute(
                "UPDATE users SET mfa_wrapped = ?2, mfa_epoch = ?3, mfa_last_step = NULL, sessions_after_ms = ?4
                 WHERE user_id = ?1",
                params![user_id, wrapped, epoch, now_ms],
            )?;
            c.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])?;
            for digest in &recovery_digests {
                c.execute(
                    "INSERT INTO recovery_codes (user_id, digest) VALUES (?1, ?2)",
                    params![user_id, &digest[..]],
                )?;
            }
            c.execute(
                "UPDATE sessions SET revoked_ms = ?2 WHERE user_id = ?1 AND revoked_ms IS NULL",
                params![user_id, now_ms],
            )?;
            Ok(0)
        }))?;
        Ok(())
    }

    /// The user's TOTP secret, unwrapped for one check.
    pub fn totp_secret(&self, user: &UserRecord) -> Result<Option<Secret32>, StoreError> {
        let user_id = user.user_id;
        let wrapped: Option<Vec<u8>> = self.engine.query(|c| {
            Ok(c.prepare_cached("SELECT mfa_wrapped FROM users WHERE user_id = ?1")?
                .query_row([user_id], |row| row.get(0))
                .optional()?
                .flatten())
        })?;
        wrapped
            .map(|wrapped| self.keyring.unwrap_user_secret(&wrapped, &user_secret_binding(user_id, user.mfa_epoch)))
            .transpose()
    }

    pub fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.engine.query(|c| {
            Ok(c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"))?
                .query_row([username], user_row)
                .optional()?)
        })
    }

    pub fn user_by_id(&self, user_id: i64) -> Result<Option<UserRecord>, StoreError> {
        self.engine.query(|c| {
            Ok(c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"))?
                .query_row([user_id], user_row)
                .optional()?)
        })
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.engine.query(|c| {
            Ok(c.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"))?
                .query_map([], user_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Stores the outcome of a failed login check (the counters the lockout policy keeps).
    pub fn record_login_failure(
        &self,
        user_id: i64,
        failures: u32,
        at_ms: i64,
        locked: bool,
    ) -> Result<(), StoreError> {
        self.engine.execute(Box::new(move |c| {
            let changed = c.execute(
                "UPDATE users SET failures = ?2, last_failure_ms = ?3, locked = ?4 WHERE user_id = ?1",
                params![user_id, failures, at_ms, locked],
            )?;
            Ok(i64::try_from(changed).unwrap_or(0))
        }))?;
        Ok(())
    }

    /// Clears the failure counters after a complete login, and rehashes the password when
    /// the policy's parameters changed (`new_password_hash`).
    pub fn record_login_success(&self, user_id: i64, new_password_hash: Option<String>) -> Result<(), StoreError> {
        self.engine.execute(Box::new(move |c| {
            c.execute("UPDATE users SET failures = 0, last_failure_ms = NULL WHERE user_id = ?1", [user_id])?;
            if let Some(hash) = new_password_hash {
                c.execute("UPDATE users SET password = ?2 WHERE user_id = ?1", params![user_id, hash])?;
            }
            Ok(0)
        }))?;
        Ok(())
    }

    /// Records that TOTP step `step` was used; `false` if it (or a later one) already was:
    /// the check and the update are one statement, so two racing logins cannot both use a code.
    pub fn use_totp_step(&self, user_id: i64, step: u64) -> Result<bool, StoreError> {
        let step = i64::try_from(step).map_err(|_| StoreError::Corrupt("TOTP step overflow".into()))?;
        let changed = self.engine.execute(Box::new(move |c| {
            Ok(i64::try_from(c.execute(
                "UPDATE users SET mfa_last_step = ?2 WHERE user_id = ?1 AND (mfa_last_step IS NULL OR mfa_last_step < ?2)",
                params![user_id, step],
            )?)
            .unwrap_or(0))
        }))?;
        Ok(changed == 1)
    }

    /// Spends a recovery code; `false` if it is unknown or already used.
    pub fn use_recovery_code(&self, user_id: i64, digest: [u8; 32]) -> Result<bool, StoreError> {
        let now_ms = self.clock.now_ms();
        let changed = self.engine.execute(Box::new(move |c| {
            Ok(i64::try_from(c.execute(
                "UPDATE recovery_codes SET used_ms = ?3 WHERE user_id = ?1 AND digest = ?2 AND used_ms IS NULL",
                params![user_id, &digest[..], now_ms],
            )?)
            .unwrap_or(0))
        }))?;
        Ok(changed == 1)
    }

    /// Unused recovery codes of a user.
    pub fn recovery_codes_left(&self, user_id: i64) -> Result<u64, StoreError> {
        self.engine.query(|c| {
            let count: i64 = c.query_row(
                "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?1 AND used_ms IS NULL",
                [user_id],
                |row| row.get(0),
            )?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    pub fn set_password(&self, user_id: i64, password_hash: String) -> Result<(), StoreError> {
        self.update_user(user_id, "UPDATE users SET password = ?2 WHERE user_id = ?1", password_hash)
    }

    pub fn set_scopes(&self, user_id: i64, scopes: String) -> Result<(), StoreError> {
        self.update_user(user_id, "UPDATE users SET scopes = ?2 WHERE user_id = ?1", scopes)
    }

    /// Lifts a lockout and clears the failure counters.
    pub fn unlock_user(&self, user_id: i64) -> Result<(), StoreError> {
        self.update_user(
            user_id,
            "UPDATE users SET locked = 0, failures = 0, last_failure_ms = NULL WHERE user_id = ?1 AND ?2 = ?2",
            String::new(),
        )
    }

    /// Disables (`true`) or re-enables an account; disabling ends its sessions.
    pub fn set_user_disabled(&self, user_id: i64, disabled: bool) -> Result<(), StoreError> {
        let now_ms = self.clock.now_ms();
        self.engine.execute(Box::new(move |c| {
            let changed = c.execute(
                "UPDATE users SET disabled_ms = ?2 WHERE user_id = ?1",
                params![user_id, disabled.then_some(now_ms)],
            )?;
            if changed == 0 {
                return Err(StoreError::Missing("the user".into()));
            }
            if disabled {
                c.execute(
                    "UPDATE sessions SET revoked_ms = ?2 WHERE user_id = ?1 AND revoked_ms IS NULL",
                    params![user_id, now_ms],
                )?;
            }
            Ok(0)
        }))?;
        Ok(())
    }

    /// Ends every session of a user; effective on their next request.
    pub fn revoke_user_sessions(&self, user_id: i64) -> Result<u64, StoreError> {
        let now_ms = self.clock.now_ms();
        let ended = self.engine.execute(Box::new(move |c| {
            let changed =
                c.execute("UPDATE users SET sessions_after_ms = ?2 WHERE user_id = ?1", params![user_id, now_ms])?;
            if changed == 0 {
                return Err(StoreError::Missing("the user".into()));
            }
            Ok(i64::try_from(c.execute(
                "UPDATE sessions SET revoked_ms = ?2 WHERE user_id = ?1 AND revoked_ms IS NULL",
                params![user_id, now_ms],
            )?)
            .unwrap_or(0))
        }))?;
        Ok(u64::try_from(ended).unwrap_or(0))
    }

    fn update_user(&self, user_id: i64, sql: &'static str, value: String) -> Result<(), StoreError> {
        let changed = self
            .engine
            .execute(Box::new(move |c| Ok(i64::try_from(c.execute(sql, params![user_id, value])?).unwrap_or(0))))?;
        if changed == 0 {
            return Err(StoreError::Missing("the user".into()));
        }
        Ok(())
    }

    pub fn create_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.engine.execute(Box::new(move |c| {
            c.execute(
                "INSERT INTO sessions (digest, user_id, scopes, created_ms, last_seen_ms, idle_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    &session.digest[..],
                    session.user_id,
                    session.scopes,
                    session.created_ms,
                    session.last_seen_ms,
                    session.idle_ms,
                    session.expires_ms
                ],
            )?;
            Ok(0)
        }))?;
        Ok(())
    }

    /// A session by the digest of its token, with its user; `None` if unknown.
    /// Liveness (revocation, idle and absolute limits) is the caller's decision.
    pub fn session(&self, digest: &[u8; 32]) -> Result<Option<(SessionRecord, UserRecord)>, StoreError> {
        // One statement for both rows: this runs on every request of a logged-in user.
        let found = self.engine.query(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT s.digest, s.user_id, s.scopes, s.created_ms, s.last_seen_ms, s.idle_ms, s.expires_ms,
                        s.revoked_ms, {USER_COLUMNS_QUALIFIED}
                 FROM sessions s JOIN users u ON u.user_id = s.user_id WHERE s.digest = ?1"
            ))?
            .query_row([&digest[..]], |row| {
                let session = session_row(row)?;
                let user = user_row_at(row, 8)?;
                Ok((session, user))
            })
            .optional()?)
        })?;
        Ok(found.filter(|(session, _)| medvault_crypto::constant_time_eq(&session.digest, digest)))
    }

    /// Records activity on a session (the server calls this at most once a minute per
    /// session, so reads do not each cost a write).
    pub fn touch_session(&self, digest: [u8; 32], last_seen_ms: i64) -> Result<(), StoreError> {
        self.engine.execute(Box::new(move |c| {
            c.execute(
                "UPDATE sessions SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE digest = ?1",
                params![&digest[..], last_seen_ms],
            )?;
            Ok(0)
        }))?;
        Ok(())
    }

    /// Logout.
    pub fn end_session(&self, digest: [u8; 32]) -> Result<(), StoreError> {
        let now_ms = self.clock.now_ms();
        self.engine.execute(Box::new(move |c| {
            c.execute(
                "UPDATE sessions SET revoked_ms = ?2 WHERE digest = ?1 AND revoked_ms IS NULL",
                params![&digest[..], now_ms],
            )?;
            Ok(0)
        }))?;
        Ok(())
    }

    /// Sessions ended or expired before `before_ms` are removed (housekeeping).
    pub fn purge_sessions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let removed = self.engine.execute(Box::new(move |c| {
            Ok(i64::try_from(c.execute("DELETE FROM sessions WHERE expires_ms < ?1 OR revoked_ms < ?1", [before_ms])?)
                .unwrap_or(0))
        }))?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// Assigns a user to a patient explicitly (the third kind of care relationship).
    pub fn assign_patient(&self, user_id: i64, patient_id: &str, by: &str) -> Result<(), StoreError> {
        let patient = self.compartment_token(patient_id);
        let now_ms = self.clock.now_ms();
        let by = by.to_string();
        self.engine.execute(Box::new(move |c| {
            c.execute(
                "INSERT INTO assignments (user_id, patient, created_ms, created_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id, patient) DO NOTHING",
                params![user_id, &patient[..], now_ms, by],
            )?;
            Ok(0)
        }))?;
        Ok(())
    }

    /// Removes an explicit assignment; `false` if there was none.
    pub fn unassign_patient(&self, user_id: i64, patient_id: &str) -> Result<bool, StoreError> {
        let patient = self.compartment_token(patient_id);
        let removed = self.engine.execute(Box::new(move |c| {
            Ok(i64::try_from(c.execute(
                "DELETE FROM assignments WHERE user_id = ?1 AND patient = ?2",
                params![user_id, &patient[..]],
            )?)
            .unwrap_or(0))
        }))?;
        Ok(removed == 1)
    }

    /// Whether `user_id` (a clinician whose practitioner token is `practitioner`) has a care
    /// relationship with the patient of compartment `patient` at `now_ms`: a CareTeam or
    /// Encounter naming them, an explicit assignment, or an unexpired break-glass grant.
    pub fn care_relationship(
        &self,
        user_id: i64,
        practitioner: Option<&[u8; 32]>,
        patient: &[u8; 32],
        now_ms: i64,
    ) -> Result<CareRelationship, StoreError> {
        self.engine.query(|c| {
            let no_practitioner = [0u8; 32];
            // The lasting kinds first; a break-glass grant only if there is none.
            let until: Option<Option<i64>> = c
                .prepare_cached(
                    "SELECT NULL FROM care_links WHERE practitioner = ?2 AND patient = ?3 AND ?5 = 1
                     UNION ALL SELECT NULL FROM assignments WHERE user_id = ?1 AND patient = ?3
                     UNION ALL SELECT MAX(expires_ms) FROM break_glass
                         WHERE user_id = ?1 AND patient = ?3 AND expires_ms > ?4 HAVING COUNT(*) > 0
                     LIMIT 1",
                )?
                .query_row(
                    params![
                        user_id,
                        &practitioner.unwrap_or(&no_practitioner)[..],
                        &patient[..],
                        now_ms,
                        practitioner.is_some()
                    ],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(match until {
                None => CareRelationship::None,
                Some(None) => CareRelationship::Lasting,
                Some(Some(expires_ms)) => CareRelationship::Until(expires_ms),
            })
        })
    }

    /// Every patient compartment a clinician has a care relationship with now (the same
    /// rules as [`Store::care_relationship`]): the lasting ones, and those open through an
    /// unexpired break-glass grant (with its end). Searches restrict their plans to these.
    pub fn care_compartments(
        &self,
        user_id: i64,
        practitioner: Option<&[u8; 32]>,
        now_ms: i64,
    ) -> Result<Vec<CareCompartment>, StoreError> {
        self.engine.query(|c| {
            let no_practitioner = [0u8; 32];
            let rows: Vec<(Vec<u8>, Option<i64>)> = c
                .prepare_cached(
                    "SELECT patient, NULL FROM care_links WHERE practitioner = ?2 AND ?4 = 1
                     UNION SELECT patient, NULL FROM assignments WHERE user_id = ?1
                     UNION SELECT patient, MAX(expires_ms) FROM break_glass
                         WHERE user_id = ?1 AND expires_ms > ?3 GROUP BY patient",
                )?
                .query_map(
                    params![user_id, &practitioner.unwrap_or(&no_practitioner)[..], now_ms, practitioner.is_some()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?
                .collect::<Result<_, _>>()?;
            let mut compartments: std::collections::BTreeMap<[u8; 32], Option<i64>> = Default::default();
            for (patient, until) in rows {
                let Ok(patient) = <[u8; 32]>::try_from(patient) else { continue };
                let entry = compartments.entry(patient).or_insert(until);
                // A lasting relationship wins over a grant.
                if until.is_none() {
                    *entry = None;
                }
            }
            Ok(compartments.into_iter().collect())
        })
    }

    /// A marker that changes when anything commits to the store: at once for this
    /// process's commits, within `CHANGE_POLL_MS` (50 ms) for another process's (the
    /// command line). What was read from the account tables is current while it holds.
    pub fn change_marker(&self) -> Result<crate::sqlite::ChangeMarker, StoreError> {
        self.engine.change_marker()
    }

    /// Opens break-glass access for one user to one patient until `expires_ms`. The patient
    /// and the reason are sealed (shared data key), bound to the grant's user and time.
    pub fn create_break_glass(
        &self,
        user_id: i64,
        patient_id: &str,
        reason: &str,
        expires_ms: i64,
    ) -> Result<i64, StoreError> {
        let patient = self.compartment_token(patient_id);
        let created_ms = self.clock.now_ms();
        let details =
            serde_json::to_vec(&serde_json::json!({"patient": format!("Patient/{patient_id}"), "reason": reason}))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed = self.seal_account_record(BREAK_GLASS_TYPE, user_id, created_ms, &details)?;
        self.engine.execute(Box::new(move |c| {
            c.execute(
                "INSERT INTO break_glass (user_id, patient, sealed, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user_id, &patient[..], sealed, created_ms, expires_ms],
            )?;
            Ok(c.last_insert_rowid())
        }))
    }

    /// Break-glass grants, newest first; only those awaiting review when `open_only`.
    pub fn break_glass_grants(&self, open_only: bool) -> Result<Vec<BreakGlassRecord>, StoreError> {
        let rows: Vec<(BreakGlassRecord, Vec<u8>)> = self.engine.query(|c| {
            Ok(c.prepare(
                "SELECT g.grant_id, g.user_id, COALESCE(u.username, ''), g.sealed, g.created_ms, g.expires_ms,
                        g.reviewed_ms, g.reviewer, g.decision
                 FROM break_glass g LEFT JOIN users u ON u.user_id = g.user_id
                 WHERE ?1 = 0 OR g.reviewed_ms IS NULL ORDER BY g.grant_id DESC",
            )?
            .query_map([open_only], |row| {
                let record = BreakGlassRecord {
                    grant_id: row.get(0)?,
                    user_id: row.get(1)?,
                    username: row.get(2)?,
                    patient: String::new(),
                    reason: String::new(),
                    created_ms: row.get(4)?,
                    expires_ms: row.get(5)?,
                    reviewed_ms: row.get(6)?,
                    reviewer: row.get(7)?,
                    decision: row.get(8)?,
                };
                Ok((record, row.get(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(|(mut record, sealed)| {
                let details = self.open_account_record(BREAK_GLASS_TYPE, record.user_id, record.created_ms, &sealed)?;
                let details: serde_json::Value = serde_json::from_slice(&details).map_err(|_| {
                    StoreError::Integrity(format!("break-glass grant {} does not parse", record.grant_id))
                })?;
                let text = |name: &str| details.get(name).and_then(|v| v.as_str()).unwrap_or("").to_string();
                record.patient = text("patient");
                record.reason = text("reason");
                Ok(record)
            })
            .collect()
    }

    /// Closes a break-glass review with a decision; `false` if the grant is unknown or
    /// already reviewed.
    pub fn review_break_glass(&self, grant_id: i64, reviewer: &str, decision: &str) -> Result<bool, StoreError> {
        let now_ms = self.clock.now_ms();
        let (reviewer, decision) = (reviewer.to_string(), decision.to_string());
        let changed = self.engine.execute(Box::new(move |c| {
            Ok(i64::try_from(c.execute(
                "UPDATE break_glass SET reviewed_ms = ?2, reviewer = ?3, decision = ?4
                 WHERE grant_id = ?1 AND reviewed_ms IS NULL",
                params![grant_id, now_ms, reviewer, decision],
            )?)
            .unwrap_or(0))
        }))?;
        Ok(changed == 1)
    }

    /// Seals an account record that names a patient, bound to its row by (kind, user, time).
    fn seal_account_record(
        &self,
        kind: &str,
        user_id: i64,
        at_ms: i64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let key = account_record_key(user_id, at_ms);
        let identity = account_identity(self.keyring.store_id(), kind, &key);
        Ok(self.keyring.shared_sealer().seal(&identity, plaintext)?)
    }

    fn open_account_record(&self, kind: &str, user_id: i64, at_ms: i64, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = account_record_key(user_id, at_ms);
        let identity = account_identity(self.keyring.store_id(), kind, &key);
        self.keyring
            .shared_sealer()
            .open(&identity, sealed)
            .map_err(|_| StoreError::Integrity(format!("a {kind} record failed authentication")))
    }
}

/// A service client that authenticates with signed JWT assertions (SMART Backend Services).
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub client_id: String,
    /// The client's public keys, a JWK Set (JSON text).
    pub jwks: String,
    pub scopes: String,
    pub created_ms: i64,
    pub disabled_ms: Option<i64>,
}

impl Store {
    /// Registers a service client's public keys and scopes; `Conflict` if the id is taken.
    pub fn register_client(&self, client_id: &str, jwks: &str, scopes: &str) -> Result<(), StoreError> {
        let now_ms = self.clock.now_ms();
        let (client_id, jwks, scopes) = (client_id.to_string(), jwks.to_string(), scopes.to_string());
        self.engine.execute(Box::new(move |c| {
            let exists: Option<i64> = c
                .query_row("SELECT 1 FROM service_clients WHERE client_id = ?1", [&client_id], |row| row.get(0))
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!("a service client '{client_id}' is already registered")));
            }
            c.execute(
                "INSERT INTO service_clients (client_id, jwks, scopes, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![client_id, jwks, scopes, now_ms],
            )?;
            Ok(0)
        }))?;
        Ok(())
    }

    pub fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        self.engine.query(|c| {
            Ok(c.prepare_cached(
                "SELECT client_id, jwks, scopes, created_ms, disabled_ms FROM service_clients WHERE client_id = ?1",
            )?
            .query_row([client_id], client_row)
            .optional()?)
        })
    }

    pub fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.engine.query(|c| {
            Ok(c.prepare(
                "SELECT client_id, jwks, scopes, created_ms, disabled_ms FROM service_clients ORDER BY client_id",
            )?
            .query_map([], client_row)?
            .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Disables a registered client (its assertions are refused; tokens it got are revoked).
    pub fn disable_client(&self, client_id: &str) -> Result<(), StoreError> {
        let now_ms = self.clock.now_ms();
        let client_id = client_id.to_string();
        self.engine.execute(Box::new(move |c| {
            let changed = c.execute(
                "UPDATE service_clients SET disabled_ms = ?2 WHERE client_id = ?1",
                params![client_id, now_ms],
            )?;
            if changed == 0 {
                return Err(StoreError::Missing("the service client".into()));
            }
            c.execute(
                "UPDATE tokens SET revoked_ms = ?2 WHERE client = ?1 AND revoked_ms IS NULL",
                params![client_id, now_ms],
            )?;
            Ok(0)
        }))?;
        Ok(())
    }

    /// Records an assertion's `jti` until it expires; `false` if the client already used it
    /// (a replayed assertion). Expired ids are purged on the way.
    pub fn use_assertion_id(&self, client_id: &str, jti: &str, expires_ms: i64) -> Result<bool, StoreError> {
        let now_ms = self.clock.now_ms();
        let (client_id, jti) = (client_id.to_string(), jti.to_string());
        let inserted = self.engine.execute(Box::new(move |c| {
            c.execute("DELETE FROM assertion_ids WHERE expires_ms < ?1", [now_ms])?;
            Ok(i64::try_from(c.execute(
                "INSERT INTO assertion_ids (client_id, jti, expires_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![client_id, jti, expires_ms],
            )?)
            .unwrap_or(0))
        }))?;
        Ok(inserted == 1)
    }
}

fn client_row(row: &Row<'_>) -> rusqlite::Result<ClientRecord> {
    Ok(ClientRecord {
        client_id: row.get(0)?,
        jwks: row.get(1)?,
        scopes: row.get(2)?,
        created_ms: row.get(3)?,
        disabled_ms: row.get(4)?,
    })
}

/// The `resource_type` of a sealed break-glass record: not a FHIR type, so it cannot be
/// confused with a resource version.
const BREAK_GLASS_TYPE: &str = ":break-glass";

fn account_record_key(user_id: i64, at_ms: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&user_id.to_be_bytes());
    key[8..].copy_from_slice(&at_ms.to_be_bytes());
    key
}

fn account_identity<'a>(store_id: &'a [u8; 16], kind: &'a str, key: &'a [u8; 16]) -> RecordIdentity<'a> {
    RecordIdentity { store_id, resource_type: kind, resource_key: key, version: 1, deleted: false }
}
