//! SMART App Launch v2 scopes: what an access token lets its holder do.
//!
//! A resource scope is `context/Type.permissions`:
//!
//! - context: `patient` (the patient in the launch context), `user` (what the user may
//!   see), `system` (a backend service, no user);
//! - type: a FHIR resource type name or `*` for all;
//! - permissions (v2): letters of `c` create, `r` read, `u` update, `d` delete, `s` search,
//!   in that order, each at most once, at least one (`rs`, `cud`, `cruds`).
//!
//! The SMART v1 forms are accepted and mapped to v2 as the SMART v2 specification says:
//! `read` → `rs`, `write` → `cud`, `*` → `cruds` (`user/*.*` is `user/*.cruds`). Output is
//! always v2.
//!
//! Granular scopes (`patient/Observation.rs?category=laboratory`) are refused with
//! [`ScopeError::GranularUnsupported`] rather than widened to the whole type: silently
//! granting more than was asked would be worse than refusing.
//!
//! Scopes that are not resource scopes (`openid`, `fhirUser`, `launch`, `launch/patient`,
//! `offline_access`, …) are kept as "other" strings for the caller to interpret.
//! Resource-type names are checked for syntax only; whether the type exists is the
//! caller's check.

use std::fmt;

/// Most scopes in one request (space-separated tokens, resource and other together).
pub const SCOPES_MAX: usize = 64;
/// Most bytes of one scope token.
pub const SCOPE_BYTES_MAX: usize = 128;
/// Most bytes of a whole scope string: every token at its maximum with its separator.
pub const SCOPE_TEXT_BYTES_MAX: usize = SCOPES_MAX * (SCOPE_BYTES_MAX + 1);
/// Most characters of a resource-type name (`[A-Z][A-Za-z]{0,63}`).
pub const RESOURCE_TYPE_CHARS_MAX: usize = 64;

/// Whose data a scope covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeContext {
    /// `patient/`: data of the patient in the launch context.
    Patient,
    /// `user/`: data the signed-in user may access.
    User,
    /// `system/`: a backend service acting with no user.
    System,
}

impl ScopeContext {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }

    fn from_prefix(text: &str) -> Option<ScopeContext> {
        match text {
            "patient" => Some(ScopeContext::Patient),
            "user" => Some(ScopeContext::User),
            "system" => Some(ScopeContext::System),
            _ => None,
        }
    }
}

/// A FHIR interaction a permission letter stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `c`: create.
    Create,
    /// `r`: read, vread, history of a known resource.
    Read,
    /// `u`: update, patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search.
    Search,
}

impl Interaction {
    /// In canonical order: the order of the letters in `cruds`.
    pub const ALL: [Interaction; 5] =
        [Interaction::Create, Interaction::Read, Interaction::Update, Interaction::Delete, Interaction::Search];

    pub fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }

    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 1 << 1,
            Interaction::Update => 1 << 2,
            Interaction::Delete => 1 << 3,
            Interaction::Search => 1 << 4,
        }
    }
}

/// A set of [`Interaction`]s, printed as v2 letters in `cruds` order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);
    /// `cruds` (v1 `*`).
    pub const ALL: Permissions = Permissions(0b1_1111);
    /// `rs`, what v1 `read` means.
    pub const READ_V1: Permissions = Permissions(0b1_0010);
    /// `cud`, what v1 `write` means.
    pub const WRITE_V1: Permissions = Permissions(0b0_1101);

    pub fn of(interactions: &[Interaction]) -> Permissions {
        Permissions(interactions.iter().fold(0, |bits, interaction| bits | interaction.bit()))
    }

    pub fn contains(self, interaction: Interaction) -> bool {
        self.0 & interaction.bit() != 0
    }

    pub fn intersection(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    pub fn is_subset_of(self, other: Permissions) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// v2 letters (a non-empty subsequence of `cruds`) or the v1 words.
    fn parse(text: &str) -> Result<Permissions, &'static str> {
        match text {
            "read" => return Ok(Permissions::READ_V1),
            "write" => return Ok(Permissions::WRITE_V1),
            "*" => return Ok(Permissions::ALL),
            "" => return Err("no permissions after the dot"),
            _ => {}
        }
        let mut bits = 0u8;
        let mut next_allowed = 0usize;
        for letter in text.chars() {
            let position = Interaction::ALL[next_allowed.min(Interaction::ALL.len())..]
                .iter()
                .position(|interaction| interaction.letter() == letter)
                .map(|offset| offset + next_allowed);
            let Some(position) = position else {
                return Err(if "cruds".contains(letter) {
                    "permission letters must follow the order c, r, u, d, s without repeats"
                } else {
                    "permissions must be letters of c, r, u, d, s (or v1 read, write, *)"
                });
            };
            bits |= Interaction::ALL[position].bit();
            next_allowed = position + 1;
        }
        Ok(Permissions(bits))
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for interaction in Interaction::ALL {
            if self.contains(interaction) {
                write!(f, "{}", interaction.letter())?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions(\"{self}\")")
    }
}

/// One resource scope, such as `patient/Observation.rs`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub context: ScopeContext,
    /// `None` is `*`, every resource type. A `Some` holds a syntactically valid type name.
    pub resource_type: Option<String>,
    pub permissions: Permissions,
}

impl Scope {
    /// Parses one resource scope (v2 or v1 form). Text that is not a resource scope
    /// (no `patient/`, `user/` or `system/` prefix) is [`ScopeError::Malformed`].
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        check_token(text)?;
        let malformed = |reason| ScopeError::Malformed { scope: text.to_owned(), reason };
        let (context, rest) = text.split_once('/').ok_or_else(|| malformed("no context"))?;
        let context =
            ScopeContext::from_prefix(context).ok_or_else(|| malformed("context must be patient, user or system"))?;
        if rest.contains('?') {
            return Err(ScopeError::GranularUnsupported { scope: text.to_owned() });
        }
        let (resource_type, permissions) =
            rest.split_once('.').ok_or_else(|| malformed("expected Type.permissions after the context"))?;
        let resource_type = match resource_type {
            "*" => None,
            name if is_resource_type_name(name) => Some(name.to_owned()),
            _ => return Err(malformed("resource type must be * or a FHIR type name")),
        };
        let permissions = Permissions::parse(permissions).map_err(malformed)?;
        Ok(Scope { context, resource_type, permissions })
    }

    /// Whether this scope lets its holder perform `interaction` on `resource_type` in
    /// `context`.
    pub fn allows(&self, context: ScopeContext, resource_type: &str, interaction: Interaction) -> bool {
        self.context == context
            && self.resource_type.as_deref().is_none_or(|own| own == resource_type)
            && self.permissions.contains(interaction)
    }

    fn same_target(&self, other: &Scope) -> bool {
        self.context == other.context && self.resource_type == other.resource_type
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource_type = self.resource_type.as_deref().unwrap_or("*");
        write!(f, "{}/{}.{}", self.context.as_str(), resource_type, self.permissions)
    }
}

/// The scopes of a request or a grant, in canonical form: one resource scope per context
/// and type (permissions of repeats are merged), none made redundant by a wildcard of the
/// same context, other scopes once each, in order of first appearance.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScopeSet {
    scopes: Vec<Scope>,
    other: Vec<String>,
}

impl ScopeSet {
    /// Parses an OAuth `scope` parameter: tokens separated by spaces (runs of spaces and
    /// leading or trailing spaces are tolerated; tabs and other characters outside RFC
    /// 6749's scope syntax are not). At most [`SCOPES_MAX`] tokens of at most
    /// [`SCOPE_BYTES_MAX`] bytes. One malformed resource scope refuses the whole request:
    /// a client should learn that its scope is wrong rather than get less silently.
    pub fn parse(space_separated: &str) -> Result<ScopeSet, ScopeError> {
        if space_separated.len() > SCOPE_TEXT_BYTES_MAX {
            return Err(ScopeError::TextTooLong { max: SCOPE_TEXT_BYTES_MAX });
        }
        let tokens: Vec<&str> = space_separated.split(' ').filter(|token| !token.is_empty()).collect();
        if tokens.len() > SCOPES_MAX {
            return Err(ScopeError::TooMany { max: SCOPES_MAX });
        }
        let mut set = ScopeSet::default();
        for token in tokens {
            check_token(token)?;
            if is_resource_scope(token) {
                set.insert(Scope::parse(token)?);
            } else if !set.other.iter().any(|other| other == token) {
                set.other.push(token.to_owned());
            }
        }
        set.drop_redundant();
        Ok(set)
    }

    /// Whether some scope lets its holder perform `interaction` on `resource_type` in
    /// `context`. Contexts do not imply each other: a `user/` scope does not allow a
    /// `patient/` access; the caller decides which context a request is in.
    pub fn allows(&self, context: ScopeContext, resource_type: &str, interaction: Interaction) -> bool {
        self.scopes.iter().any(|scope| scope.allows(context, resource_type, interaction))
    }

    /// What may be granted of this (requested) set given what the client or user is
    /// allowed (`granted`): for each requested scope, the permissions that some granted
    /// scope of the same context also gives, on the narrower of the two targets
    /// (requested `Observation` ∩ granted `*` is `Observation`; requested `*` ∩ granted
    /// `Observation` is `Observation`). Other scopes are kept if both sets have them.
    /// The result never allows anything either input does not.
    ///
    /// The result has at most as many resource scopes as the two inputs together, which
    /// can exceed [`SCOPES_MAX`] in contrived cases; it is not re-checked against it.
    pub fn narrow(&self, granted: &ScopeSet) -> ScopeSet {
        let mut narrowed = ScopeSet::default();
        for requested in &self.scopes {
            for allowed in granted.scopes.iter().filter(|allowed| allowed.context == requested.context) {
                let permissions = requested.permissions.intersection(allowed.permissions);
                if permissions.is_empty() {
                    continue;
                }
                let resource_type = match (&requested.resource_type, &allowed.resource_type) {
                    (Some(asked), None) => Some(asked.clone()),
                    (Some(asked), Some(given)) if asked == given => Some(asked.clone()),
                    (Some(_), Some(_)) => continue,
                    (None, given) => given.clone(),
                };
                narrowed.insert(Scope { context: requested.context, resource_type, permissions });
            }
        }
        narrowed.other = self.other.iter().filter(|other| granted.other.contains(other)).cloned().collect();
        narrowed.drop_redundant();
        narrowed
    }

    /// No resource scopes and no other scopes.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.other.is_empty()
    }

    /// The resource scopes, canonical.
    pub fn resource_scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// The scopes that are not resource scopes (`openid`, `launch/patient`, …).
    pub fn other_scopes(&self) -> &[String] {
        &self.other
    }

    /// Whether a non-resource scope such as `offline_access` is present.
    pub fn has_other(&self, scope: &str) -> bool {
        self.other.iter().any(|other| other == scope)
    }

    /// Adds a scope, merging its permissions into an existing one for the same target.
    fn insert(&mut self, scope: Scope) {
        match self.scopes.iter_mut().find(|existing| existing.same_target(&scope)) {
            Some(existing) => existing.permissions = existing.permissions.union(scope.permissions),
            None => self.scopes.push(scope),
        }
    }

    /// Removes type-specific scopes whose permissions a wildcard of the same context
    /// already gives, so the text form is canonical and round-trips.
    fn drop_redundant(&mut self) {
        let wildcards: Vec<(ScopeContext, Permissions)> = self
            .scopes
            .iter()
            .filter(|scope| scope.resource_type.is_none())
            .map(|scope| (scope.context, scope.permissions))
            .collect();
        self.scopes.retain(|scope| {
            scope.resource_type.is_none()
                || !wildcards.iter().any(|(context, permissions)| {
                    *context == scope.context && scope.permissions.is_subset_of(*permissions)
                })
        });
    }
}

impl fmt::Display for ScopeSet {
    /// Canonical v2 text: resource scopes, then other scopes, separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let resource = self.scopes.iter().map(|scope| scope.to_string());
        for token in resource.chain(self.other.iter().cloned()) {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(&token)?;
            first = false;
        }
        Ok(())
    }
}

/// Why a scope string was refused. Messages quote a scope only after it has passed the
/// length and character checks, so they are safe to log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The whole `scope` parameter is longer than [`SCOPE_TEXT_BYTES_MAX`].
    #[error("scope text longer than {max} bytes")]
    TextTooLong { max: usize },
    /// More than [`SCOPES_MAX`] scopes.
    #[error("more than {max} scopes")]
    TooMany { max: usize },
    /// One scope is longer than [`SCOPE_BYTES_MAX`].
    #[error("a scope longer than {max} bytes")]
    ScopeTooLong { max: usize },
    /// A character outside RFC 6749's scope-token syntax (printable ASCII except space,
    /// `"` and `\`).
    #[error("a scope contains a character outside the OAuth scope syntax")]
    InvalidCharacter,
    /// A resource scope that does not follow `context/Type.permissions`.
    #[error("scope `{scope}`: {reason}")]
    Malformed { scope: String, reason: &'static str },
    /// A granular scope (`?param=value`), not supported yet.
    #[error("scope `{scope}`: granular scopes (?param=value) are not supported yet")]
    GranularUnsupported { scope: String },
}

fn is_resource_scope(token: &str) -> bool {
    ["patient/", "user/", "system/"].iter().any(|prefix| token.starts_with(prefix))
}

/// RFC 6749 3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn check_token(token: &str) -> Result<(), ScopeError> {
    if token.len() > SCOPE_BYTES_MAX {
        return Err(ScopeError::ScopeTooLong { max: SCOPE_BYTES_MAX });
    }
    let valid = |byte: &u8| matches!(byte, 0x21 | 0x23..=0x5b | 0x5d..=0x7e);
    if token.is_empty() || !token.bytes().all(|byte| valid(&byte)) {
        return Err(ScopeError::InvalidCharacter);
    }
    Ok(())
}

/// `[A-Z][A-Za-z]{0,63}`: the shape of a FHIR resource type name.
fn is_resource_type_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z'))
        && name.len() <= RESOURCE_TYPE_CHARS_MAX
        && bytes.all(|byte| byte.is_ascii_alphabetic())
}
