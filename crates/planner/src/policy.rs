//! The policy file: what is in scope and how keys are rotated.
//!
//! A policy is TOML with three sections, `[scope]`, `[rotation]` and `[delivery]`.
//! Every field has a default, unknown fields are refused, and every error names the
//! file, the line and the field, so that a typo never silently widens or narrows
//! what keyturn touches. Parsing is pure: nothing is contacted.

use std::fmt;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{AccountId, ExternalId, OrganizationalUnitId, RoleName, UserName};

/// The role keyturn assumes in member accounts unless the policy names another.
pub const DEFAULT_ROLE_NAME: &str = "OrganizationAccountAccessRole";
/// The user tag that exempts a user from rotation unless the policy names another.
pub const DEFAULT_EXEMPT_TAG: &str = "keyturn:exempt";

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Which accounts and users are in scope.
    #[serde(default)]
    pub scope: Scope,
    /// The rotation thresholds and gates.
    #[serde(default)]
    pub rotation: Rotation,
    /// Where new secrets are delivered.
    #[serde(default)]
    pub delivery: Delivery,
}

/// Which accounts and users keyturn looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// The role assumed in every member account.
    #[serde(default = "default_role_name")]
    pub role_name: RoleName,
    /// The ExternalId the member role's trust policy requires, if any.
    #[serde(default)]
    pub external_id: Option<ExternalId>,
    /// Accounts to include. With `organizational_units`, the union of both is in scope;
    /// when both are empty, every active account of the organization is.
    #[serde(default)]
    pub accounts: Vec<AccountId>,
    /// Accounts never touched, whatever else matches them.
    #[serde(default)]
    pub exclude_accounts: Vec<AccountId>,
    /// Organizational units (or the root) whose accounts are in scope, recursively.
    #[serde(default)]
    pub organizational_units: Vec<OrganizationalUnitId>,
    /// Glob patterns of user names that are skipped.
    #[serde(default)]
    pub exclude_users: UserPatterns,
    /// A user carrying this tag (any value; the value is reported as the reason) is skipped.
    #[serde(default = "default_exempt_tag")]
    pub exempt_tag: String,
}

impl Default for Scope {
    fn default() -> Self {
        Self {
            role_name: default_role_name(),
            external_id: None,
            accounts: Vec::new(),
            exclude_accounts: Vec::new(),
            organizational_units: Vec::new(),
            exclude_users: UserPatterns::default(),
            exempt_tag: default_exempt_tag(),
        }
    }
}

/// Why a user is out of scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserExclusion {
    /// The user's name matches one of the policy's `exclude_users` patterns.
    ExcludedByPattern(String),
    /// The user carries the exemption tag; the tag's value is kept as the stated reason.
    ExemptByTag { tag: String, value: String },
}

impl fmt::Display for UserExclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExcludedByPattern(pattern) => write!(f, "user excluded by pattern {pattern:?}"),
            Self::ExemptByTag { tag, value } if value.is_empty() => {
                write!(f, "user exempt by tag {tag}")
            }
            Self::ExemptByTag { tag, value } => write!(f, "user exempt by tag {tag}: {value}"),
        }
    }
}

impl Scope {
    /// Whether an account is in scope, given the accounts the organization lists under
    /// the policy's OUs (`in_listed_units`). Exclusions always win.
    pub fn includes_account(&self, account: &AccountId, in_listed_units: bool) -> bool {
        if self.exclude_accounts.contains(account) {
            return false;
        }
        let selective = !self.accounts.is_empty() || !self.organizational_units.is_empty();
        !selective || self.accounts.contains(account) || in_listed_units
    }

    /// Why a user is out of scope, or `None` when it is in scope.
    pub fn user_exclusion<'a>(
        &self,
        user: &UserName,
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<UserExclusion> {
        if let Some(pattern) = self.exclude_users.matching(user.as_str()) {
            return Some(UserExclusion::ExcludedByPattern(pattern.to_owned()));
        }
        tags.into_iter()
            .find(|(key, _)| *key == self.exempt_tag)
            .map(|(key, value)| UserExclusion::ExemptByTag {
                tag: key.to_owned(),
                value: value.to_owned(),
            })
    }
}

/// Glob patterns over user names (`*`, `?`, `[abc]`), compiled once.
#[derive(Clone, Default)]
pub struct UserPatterns {
    patterns: Vec<String>,
    set: GlobSet,
}

impl UserPatterns {
    /// Compiles the patterns; an invalid pattern is an error naming it.
    pub fn new(patterns: Vec<String>) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in &patterns {
            let glob =
                Glob::new(pattern).map_err(|e| format!("invalid user pattern {pattern:?}: {e}"))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { patterns, set })
    }

    /// The first pattern that matches `user_name`, if any.
    pub fn matching(&self, user_name: &str) -> Option<&str> {
        self.set
            .matches(user_name)
            .first()
            .map(|&i| self.patterns[i].as_str())
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl fmt::Debug for UserPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

impl PartialEq for UserPatterns {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Serialize for UserPatterns {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.patterns.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for UserPatterns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let patterns = Vec::<String>::deserialize(deserializer)?;
        Self::new(patterns).map_err(serde::de::Error::custom)
    }
}

/// The thresholds and gates of a rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// An Active key older than this is rotated.
    #[serde(default = "days::<90>", with = "human_duration")]
    pub max_key_age: Duration,
    /// An Active key unused (or never used) this long since max(created, last used) is retired.
    #[serde(default = "days::<45>", with = "human_duration")]
    pub unused_after: Duration,
    /// After delivery, the old key must show no use for this long before deactivation.
    #[serde(default = "days::<3>", with = "human_duration")]
    pub quiet_period: Duration,
    /// An old key still in use this long after delivery is blocked for a human.
    #[serde(default = "days::<30>", with = "human_duration")]
    pub adoption_timeout: Duration,
    /// A deactivated key stays Inactive this long before deletion.
    #[serde(default = "days::<7>", with = "human_duration")]
    pub observation_period: Duration,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_key_age: days::<90>(),
            unused_after: days::<45>(),
            quiet_period: days::<3>(),
            adoption_timeout: days::<30>(),
            observation_period: days::<7>(),
        }
    }
}

/// Where and how a new secret is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// The delivery target; only Secrets Manager for now.
    #[serde(default)]
    pub kind: DeliveryKind,
    /// The secret's name, with `{account_id}` and `{user_name}` placeholders.
    #[serde(default = "default_name_template")]
    pub name_template: String,
    /// The Secrets Manager region; the SDK's region when absent.
    #[serde(default)]
    pub region: Option<String>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            kind: DeliveryKind::default(),
            name_template: default_name_template(),
            region: None,
        }
    }
}

/// The kinds of delivery target keyturn knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryKind {
    /// One AWS Secrets Manager secret per user, in the user's own account.
    #[default]
    SecretsManager,
}

fn default_role_name() -> RoleName {
    RoleName::new(DEFAULT_ROLE_NAME).expect("the default role name is valid")
}

fn default_exempt_tag() -> String {
    DEFAULT_EXEMPT_TAG.to_owned()
}

fn default_name_template() -> String {
    "keyturn/{user_name}".to_owned()
}

fn days<const N: u64>() -> Duration {
    Duration::from_secs(N * 86_400)
}

/// Durations as humantime text ("90d", "12h", "2s").
mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. \"90d\", \"12h\" or \"2s\""
            ))
        })?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom(
                "a duration must be longer than zero",
            ));
        }
        Ok(duration)
    }
}

/// A duration as people write it in a policy: the largest whole unit ("90d", "12h",
/// "90s"), or humantime's long form for anything finer.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string();
    }
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// A policy file that cannot be used, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {}{message}", location(*.line, *.column), field.as_deref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct PolicyError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// 1-based column of the offending text, when known.
    pub column: Option<usize>,
    /// The dotted field name (`scope.accounts`), when known.
    pub field: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

impl Policy {
    /// Parses and validates a policy. `file` names the source in error messages.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let (line, column, field) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (None, None, None),
            };
            PolicyError {
                file: file.to_owned(),
                line,
                column,
                field,
                message: e.message().trim().to_owned(),
            }
        })?;
        policy.check(file, text)?;
        Ok(policy)
    }

    /// The canonical TOML of the policy: what a campaign records and compares.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy always serialises")
    }

    /// Rules that span several fields.
    fn check(&self, file: &str, text: &str) -> Result<(), PolicyError> {
        let r = &self.rotation;
        let problem = if r.quiet_period >= r.adoption_timeout {
            Some((
                "rotation.quiet_period",
                "must be shorter than rotation.adoption_timeout",
            ))
        } else if !self.delivery.name_template.contains("{user_name}") {
            Some((
                "delivery.name_template",
                "must contain {user_name}, so that every user gets a secret of its own",
            ))
        } else {
            None
        };
        match problem {
            None => Ok(()),
            Some((field, message)) => {
                let line = find_field_line(text, field);
                Err(PolicyError {
                    file: file.to_owned(),
                    line,
                    column: None,
                    field: Some(field.to_owned()),
                    message: message.to_owned(),
                })
            }
        }
    }
}

/// The line, column and dotted field name at a byte offset of a TOML text.
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<usize>, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_index = before.matches('\n').count();
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let lines: Vec<&str> = text.lines().collect();
    let mut key = None;
    let mut table = None;
    for raw in lines.iter().take(line_index + 1).rev() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = Some(header.trim().to_owned());
            break;
        }
        if key.is_none()
            && let Some((left, _)) = line.split_once('=')
        {
            let left = left.trim();
            if !left.is_empty()
                && left
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c))
            {
                key = Some(left.trim_matches('"').to_owned());
            }
        }
    }
    let field = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (Some(t), None) => Some(t),
        (None, Some(k)) => Some(k),
        (None, None) => None,
    };
    (Some(line_index + 1), Some(column), field)
}

/// The line on which a dotted field is set, if the text sets it.
fn find_field_line(text: &str, field: &str) -> Option<usize> {
    let (table, key) = field.split_once('.')?;
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().to_owned();
        } else if current == table
            && let Some((left, _)) = line.split_once('=')
            && left.trim() == key
        {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> PolicyError {
        Policy::from_toml("policy.toml", text).unwrap_err()
    }

    #[test]
    fn an_empty_policy_takes_every_default() {
        let policy = Policy::from_toml("p.toml", "").unwrap();
        assert_eq!(policy.scope.role_name.as_str(), DEFAULT_ROLE_NAME);
        assert_eq!(policy.scope.exempt_tag, DEFAULT_EXEMPT_TAG);
        assert_eq!(
            policy.rotation.max_key_age,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            policy.rotation.unused_after,
            Duration::from_secs(45 * 86_400)
        );
        assert_eq!(
            policy.rotation.quiet_period,
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(
            policy.rotation.adoption_timeout,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            policy.rotation.observation_period,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(policy.delivery.kind, DeliveryKind::SecretsManager);
        assert_eq!(policy.delivery.name_template, "keyturn/{user_name}");
        assert_eq!(policy.delivery.region, None);
    }

    #[test]
    fn a_full_policy_is_read_field_by_field() {
        let text = r#"
[scope]
role_name = "KeyturnRole"
external_id = "keyturn-ext-1"
accounts = ["012345678901"]
exclude_accounts = ["111111111111"]
organizational_units = ["ou-ab12-cdef3456"]
exclude_users = ["breakglass-*", "svc-?"]
exempt_tag = "rotation:exempt"

[rotation]
max_key_age = "60d"
unused_after = "30d"
quiet_period = "2s"
adoption_timeout = "12h"
observation_period = "1h"

[delivery]
kind = "secrets-manager"
name_template = "keys/{account_id}/{user_name}"
region = "eu-west-1"
"#;
        let policy = Policy::from_toml("p.toml", text).unwrap();
        assert_eq!(policy.scope.role_name.as_str(), "KeyturnRole");
        assert_eq!(
            policy.scope.external_id.as_ref().unwrap().as_str(),
            "keyturn-ext-1"
        );
        assert_eq!(policy.scope.accounts[0].as_str(), "012345678901");
        assert_eq!(
            policy.scope.exclude_users.patterns(),
            ["breakglass-*", "svc-?"]
        );
        assert_eq!(policy.rotation.quiet_period, Duration::from_secs(2));
        assert_eq!(
            policy.rotation.adoption_timeout,
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(policy.delivery.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn a_policy_survives_a_round_trip_through_its_snapshot() {
        let policy = Policy::from_toml(
            "p.toml",
            "[scope]\nexclude_users = [\"a*\"]\n[rotation]\nquiet_period = \"90s\"\n",
        )
        .unwrap();
        let snapshot = toml::to_string(&policy).unwrap();
        assert_eq!(Policy::from_toml("snapshot", &snapshot).unwrap(), policy);
    }

    #[test]
    fn durations_print_in_the_largest_whole_unit() {
        assert_eq!(format_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(36 * 3_600)), "36h");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s 500ms");
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let e = error("[scope]\nrole_name = \"R\"\nexclude_user = [\"x\"]\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(3), Some("scope.exclude_user")),
            "{e}"
        );
        assert!(e.message.contains("unknown field `exclude_user`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("policy.toml:3:1: field `scope.exclude_user`:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_sections_are_refused() {
        let e = error("[scopes]\n");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("unknown field `scopes`"), "{e}");
    }

    #[test]
    fn malformed_values_are_named_with_their_field() {
        let cases = [
            (
                "[scope]\naccounts = [\"12345\"]\n",
                2,
                "scope.accounts",
                "exactly 12 digits",
            ),
            (
                "[scope]\n\nexclude_accounts = [123456789012]\n",
                3,
                "scope.exclude_accounts",
                "string",
            ),
            (
                "[scope]\norganizational_units = [\"ou-bad\"]\n",
                2,
                "scope.organizational_units",
                "ou-ab12-cdef3456",
            ),
            (
                "[scope]\nrole_name = \"has space\"\n",
                2,
                "scope.role_name",
                "role name",
            ),
            (
                "[scope]\nexclude_users = [\"[unclosed\"]\n",
                2,
                "scope.exclude_users",
                "invalid user pattern",
            ),
            (
                "[rotation]\nmax_key_age = \"ninety days\"\n",
                2,
                "rotation.max_key_age",
                "invalid duration",
            ),
            (
                "[rotation]\nobservation_period = \"0s\"\n",
                2,
                "rotation.observation_period",
                "longer than zero",
            ),
            (
                "[delivery]\nkind = \"email\"\n",
                2,
                "delivery.kind",
                "secrets-manager",
            ),
        ];
        for (text, line, field, words) in cases {
            let e = error(text);
            assert_eq!(
                (e.line, e.field.as_deref()),
                (Some(line), Some(field)),
                "{text:?} → {e}"
            );
            assert!(e.message.contains(words), "{text:?} → {e}");
        }
    }

    #[test]
    fn toml_syntax_errors_carry_a_line() {
        let e = error("[scope]\nrole_name = \"unterminated\n");
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn cross_field_rules_point_at_the_field() {
        let e = error("[rotation]\nquiet_period = \"40d\"\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(2), Some("rotation.quiet_period")),
            "{e}"
        );
        let e = error("[delivery]\nname_template = \"shared\"\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(2), Some("delivery.name_template")),
            "{e}"
        );
    }

    #[test]
    fn account_scope_follows_includes_units_and_exclusions() {
        let a = AccountId::new("000000000001").unwrap();
        let b = AccountId::new("000000000002").unwrap();
        let everyone = Scope::default();
        assert!(everyone.includes_account(&a, false));
        let listed = Scope {
            accounts: vec![a.clone()],
            ..Scope::default()
        };
        assert!(listed.includes_account(&a, false));
        assert!(!listed.includes_account(&b, false));
        assert!(
            listed.includes_account(&b, true),
            "an account under a listed OU is in scope too"
        );
        let excluded = Scope {
            exclude_accounts: vec![a.clone()],
            ..Scope::default()
        };
        assert!(
            !excluded.includes_account(&a, true),
            "exclusion wins over every inclusion"
        );
    }

    #[test]
    fn users_are_excluded_by_pattern_or_exemption_tag() {
        let scope = Scope {
            exclude_users: UserPatterns::new(vec!["breakglass-*".into()]).unwrap(),
            ..Scope::default()
        };
        let user = |n: &str| UserName::new(n).unwrap();
        assert_eq!(
            scope.user_exclusion(&user("breakglass-admin"), []),
            Some(UserExclusion::ExcludedByPattern("breakglass-*".into()))
        );
        assert_eq!(scope.user_exclusion(&user("app"), [("team", "x")]), None);
        let exempt = scope
            .user_exclusion(
                &user("app"),
                [("keyturn:exempt", "vendor-managed until 2027-01")],
            )
            .unwrap();
        assert_eq!(
            exempt.to_string(),
            "user exempt by tag keyturn:exempt: vendor-managed until 2027-01"
        );
    }
}
