//! The policy file: what is in scope and how keys are rotated.
//!
//! A policy is TOML with three sections, `[scope]`, `[rotation]` and `[delivery]`, and
//! an optional fourth, `[notify]`.
//! Every field has a default, unknown fields are refused, and every error names the
//! file, the line and the field, so that a typo never silently widens or narrows
//! what keyturn touches. Every duration lies between zero (excluded) and
//! [`MAX_DURATION`], and the gates that decide on last use are at least [`MIN_GATE`]
//! unless `[rotation]` allows short gates for a test bed. Parsing is pure: nothing is
//! contacted.

use std::fmt;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{AccountId, ExternalId, OrganizationalUnitId, RoleName, UserName};
use crate::rotation::events::{NotificationChannel, NotificationKind};

/// The role keyturn assumes in member accounts unless the policy names another.
pub const DEFAULT_ROLE_NAME: &str = "OrganizationAccountAccessRole";
/// The user tag that exempts a user from rotation unless the policy names another.
pub const DEFAULT_EXEMPT_TAG: &str = "keyturn:exempt";
/// The user tag that names a key's owner for notifications unless the policy names another.
pub const DEFAULT_OWNER_TAG: &str = "owner";

/// The longest duration a policy may set (3650 days, ten years): longer is a typo, and
/// no time computed from it may overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);
/// The shortest `quiet_period` and `observation_period` unless `allow_short_gates` is
/// set: last-use evidence is coarser than that (see [`Rotation::allow_short_gates`]).
pub const MIN_GATE: Duration = Duration::from_secs(86_400);

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
    /// Who is told what, and where (no notifications when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
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
    /// Allows `quiet_period` and `observation_period` under one day ([`MIN_GATE`]), for
    /// a test bed. The floor exists because GetAccessKeyLastUsed is not a real-time feed
    /// and the credential report records only the first use in a 15-minute span: a
    /// shorter gate can miss a use and disable a key still in use. Written to the
    /// snapshot when set (an unset flag is left out, so that the snapshot of a policy
    /// without it is unchanged).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_short_gates: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_key_age: days::<90>(),
            unused_after: days::<45>(),
            quiet_period: days::<3>(),
            adoption_timeout: days::<30>(),
            observation_period: days::<7>(),
            allow_short_gates: false,
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

/// The `[notify]` section: notifications to an SNS topic and/or a Slack-compatible
/// webhook when a replacement is delivered, a key is blocked or failed, and when an old
/// key is still in use as its adoption timeout approaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The SNS topic to publish to (in the runner's account; region from the ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_topic_arn: Option<SnsTopicArn>,
    /// The webhook's URL, written in the policy (then recorded with the campaign).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<WebhookUrl>,
    /// The environment variable that holds the webhook's URL, read when a run starts
    /// (the URL then never reaches the journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_env: Option<EnvVarName>,
    /// The user tag naming a key's owner; the account's email when the user lacks it.
    #[serde(default = "default_owner_tag")]
    pub owner_tag: String,
    /// Which notifications are sent (all by default).
    #[serde(default = "all_notification_kinds")]
    pub on: Vec<NotificationKind>,
    /// How long before the adoption timeout an old key still in use is reported.
    #[serde(default = "days::<3>", with = "human_duration")]
    pub warn_before_adoption_timeout: Duration,
}

impl Notify {
    /// The channels the section configures.
    pub fn channels(&self) -> Vec<NotificationChannel> {
        let mut channels = Vec::new();
        if self.sns_topic_arn.is_some() {
            channels.push(NotificationChannel::Sns);
        }
        if self.webhook_url.is_some() || self.webhook_url_env.is_some() {
            channels.push(NotificationChannel::Webhook);
        }
        channels
    }

    /// Whether notifications of this kind are wanted.
    pub fn wants(&self, kind: NotificationKind) -> bool {
        self.on.contains(&kind)
    }
}

/// An SNS topic ARN (`arn:aws:sns:REGION:ACCOUNT:NAME`; FIFO topics are not supported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnsTopicArn {
    arn: String,
    region: String,
}

impl SnsTopicArn {
    /// Validates an ARN.
    pub fn new(arn: impl Into<String>) -> Result<Self, String> {
        let arn = arn.into();
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let shape = "an SNS topic ARN, arn:aws:sns:REGION:ACCOUNT_ID:TOPIC_NAME";
        let [prefix, partition, service, region, account, name] = parts[..] else {
            return Err(format!("{arn:?} is not {shape}"));
        };
        let region_ok = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if prefix != "arn" || !partition.starts_with("aws") || service != "sns" || !region_ok {
            return Err(format!("{arn:?} is not {shape}"));
        }
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "{arn:?}: the account must be exactly 12 digits ({shape})"
            ));
        }
        if name.ends_with(".fifo") {
            return Err(format!(
                "{arn:?}: FIFO topics are not supported; use a standard topic"
            ));
        }
        if name.is_empty()
            || name.len() > 256
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{arn:?}: a topic name is 1 to 256 letters, digits, '-' or '_'"
            ));
        }
        let region = region.to_owned();
        Ok(Self { arn, region })
    }

    /// The ARN as text.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The topic's region.
    pub fn region(&self) -> &str {
        &self.region
    }
}

impl TryFrom<String> for SnsTopicArn {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<SnsTopicArn> for String {
    fn from(value: SnsTopicArn) -> Self {
        value.arn
    }
}

impl fmt::Display for SnsTopicArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// A webhook URL (`http://` or `https://`). Its path and query may be a secret (Slack's
/// are), so `Debug` and `Display` show only the scheme and host, and so do errors.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// Validates a URL: http or https, a host, no spaces, no user name or password.
    pub fn new(url: impl Into<String>) -> Result<Self, String> {
        let url = url.into();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err("a webhook URL starts with https:// or http://".to_owned());
        };
        if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
            return Err(format!(
                "a webhook URL starts with https:// or http://, not {:?}",
                scheme.chars().take(16).collect::<String>()
            ));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err("a webhook URL must not carry a user name or password".to_owned());
        }
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| !port.contains(']'))
            .map_or(authority, |(host, _)| host);
        if host.is_empty() {
            return Err("a webhook URL needs a host".to_owned());
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a webhook URL must not contain spaces or control characters".to_owned());
        }
        Ok(Self(url))
    }

    /// The whole URL (a secret for some services: never print it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The scheme and host only, for messages (`https://hooks.example.com/…`).
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        format!("{scheme}://{authority}/…")
    }
}

impl TryFrom<String> for WebhookUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<WebhookUrl> for String {
    fn from(value: WebhookUrl) -> Self {
        value.0
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The name of an environment variable (letters, digits and `_`, not starting with a digit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvVarName(String);

impl EnvVarName {
    /// Validates a name.
    pub fn new(name: impl Into<String>) -> Result<Self, String> {
        let name = name.into();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(Self(name))
        } else {
            Err(format!(
                "{name:?} is not an environment variable name (letters, digits and _, not starting with a digit)"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvVarName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<EnvVarName> for String {
    fn from(value: EnvVarName) -> Self {
        value.0
    }
}

impl fmt::Display for EnvVarName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn default_owner_tag() -> String {
    DEFAULT_OWNER_TAG.to_owned()
}

fn all_notification_kinds() -> Vec<NotificationKind> {
    NotificationKind::ALL.to_vec()
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

/// Durations as humantime text ("90d", "12h", "2s"), longer than zero and at most
/// [`MAX_DURATION`].
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
        if duration > super::MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "{text:?} is longer than ten years: a duration must be at most {}",
                super::format_duration(super::MAX_DURATION)
            )));
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

    /// What the operator should be told about a valid policy, one line each (the CLI
    /// prints them): a policy for a test bed says so.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.rotation.allow_short_gates {
            warnings.push(
                "allow_short_gates = true: quiet and observation periods under one day are \
                 allowed; this policy is for a test bed, not for production"
                    .to_owned(),
            );
        }
        warnings
    }

    /// The canonical TOML of the policy: what a campaign records and compares.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy always serialises")
    }

    /// Rules that span several fields.
    fn check(&self, file: &str, text: &str) -> Result<(), PolicyError> {
        let r = &self.rotation;
        let short_gate = [
            ("rotation.quiet_period", r.quiet_period),
            ("rotation.observation_period", r.observation_period),
        ]
        .into_iter()
        .find(|(_, gate)| !r.allow_short_gates && *gate < MIN_GATE);
        let problem = if let Some((field, gate)) = short_gate {
            Some((
                field,
                format!(
                    "must be at least one day (it is {}): GetAccessKeyLastUsed is not a \
                     real-time feed, and the credential report records only the first use in \
                     a 15-minute span, so a shorter gate can miss a use and disable a key \
                     still in use; for a test bed, set allow_short_gates = true in [rotation]",
                    format_duration(gate)
                ),
            ))
        } else if r.quiet_period >= r.adoption_timeout {
            Some((
                "rotation.quiet_period",
                "must be shorter than rotation.adoption_timeout".to_owned(),
            ))
        } else if !self.delivery.name_template.contains("{user_name}") {
            Some((
                "delivery.name_template",
                "must contain {user_name}, so that every user gets a secret of its own".to_owned(),
            ))
        } else if !is_secret_name_template(&self.delivery.name_template) {
            Some((
                "delivery.name_template",
                "must be a secret name, not an ARN: letters, digits and /_+=.@- around the \
                 {account_id} and {user_name} placeholders, so every secret stays in the \
                 user's own account"
                    .to_owned(),
            ))
        } else if let Some(notify) = &self.notify {
            notify_problem(notify, r).map(|(field, message)| (field, message.to_owned()))
        } else {
            None
        };
        match problem {
            None => Ok(()),
            Some((field, message)) => {
                let line = find_field_line(text, field).or_else(|| find_table_line(text, field));
                Err(PolicyError {
                    file: file.to_owned(),
                    line,
                    column: None,
                    field: Some(field.to_owned()),
                    message,
                })
            }
        }
    }
}

/// Whether `template`, placeholders aside, is made of the characters Secrets Manager
/// allows in a secret's name. A `:` would let the template name a secret by ARN, in
/// another account or region, so it is refused with everything else outside that set.
fn is_secret_name_template(template: &str) -> bool {
    let bare = template
        .replace("{account_id}", "")
        .replace("{user_name}", "");
    bare.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
}

/// What is wrong across the fields of `[notify]`, if anything.
fn notify_problem(notify: &Notify, rotation: &Rotation) -> Option<(&'static str, &'static str)> {
    if notify.webhook_url.is_some() && notify.webhook_url_env.is_some() {
        Some((
            "notify.webhook_url_env",
            "set either webhook_url or webhook_url_env, not both",
        ))
    } else if notify.channels().is_empty() {
        Some((
            "notify",
            "names no channel: set sns_topic_arn, webhook_url or webhook_url_env (or remove the section)",
        ))
    } else if notify.on.is_empty() {
        Some((
            "notify.on",
            "lists no notification: name at least one of \"delivered\", \"blocked\", \"failed\", \"adoption-timeout-approaching\" (or remove the section)",
        ))
    } else if notify.owner_tag.trim().is_empty() || notify.owner_tag.chars().count() > 128 {
        Some((
            "notify.owner_tag",
            "must be a tag key of 1 to 128 characters",
        ))
    } else if notify.warn_before_adoption_timeout >= rotation.adoption_timeout {
        Some((
            "notify.warn_before_adoption_timeout",
            "must be shorter than rotation.adoption_timeout (it is 3d unless set)",
        ))
    } else {
        None
    }
}

/// The line of a `[table]` header, or of the first field of a dotted name's table.
fn find_table_line(text: &str, field: &str) -> Option<usize> {
    let table = field.split('.').next()?;
    text.lines().enumerate().find_map(|(i, raw)| {
        let header = raw.trim().strip_prefix('[')?.split(']').next()?;
        (header.trim() == table).then_some(i + 1)
    })
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
allow_short_gates = true
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
        assert!(policy.rotation.allow_short_gates);
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
            "[scope]\nexclude_users = [\"a*\"]\n[rotation]\nallow_short_gates = true\nquiet_period = \"90s\"\n",
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
    fn no_policy_duration_may_exceed_ten_years() {
        let notify = "sns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n";
        for (table, field) in [
            ("rotation", "max_key_age"),
            ("rotation", "unused_after"),
            ("rotation", "quiet_period"),
            ("rotation", "adoption_timeout"),
            ("rotation", "observation_period"),
            ("notify", "warn_before_adoption_timeout"),
        ] {
            let extra = if table == "notify" { notify } else { "" };
            for value in ["300000y", "3651d"] {
                let text = format!("[{table}]\n{extra}{field} = \"{value}\"\n");
                let e = error(&text);
                let line = if table == "notify" { 3 } else { 2 };
                assert_eq!(
                    (e.line, e.field.clone()),
                    (Some(line), Some(format!("{table}.{field}"))),
                    "{text:?} → {e}"
                );
                assert!(e.message.contains("at most 3650d"), "{text:?} → {e}");
                assert!(e.to_string().starts_with("policy.toml:"), "{e}");
            }
        }
        let ceiling = Policy::from_toml(
            "p.toml",
            "[rotation]\nmax_key_age = \"3650d\"\nadoption_timeout = \"3650d\"\n",
        );
        assert!(ceiling.is_ok(), "{ceiling:?}");
    }

    #[test]
    fn gates_under_a_day_need_allow_short_gates() {
        for (field, value) in [
            ("quiet_period", "1h"),
            ("quiet_period", "23h 59m 59s"),
            ("observation_period", "2s"),
        ] {
            let text = format!("[rotation]\nmax_key_age = \"60d\"\n{field} = \"{value}\"\n");
            let e = error(&text);
            assert_eq!(
                (e.line, e.field.clone()),
                (Some(3), Some(format!("rotation.{field}"))),
                "{text:?} → {e}"
            );
            for words in [
                "at least one day",
                "GetAccessKeyLastUsed",
                "first use in a 15-minute span",
                "allow_short_gates = true",
                "test bed",
            ] {
                assert!(e.message.contains(words), "{words:?}: {e}");
            }
            let allowed = Policy::from_toml(
                "p.toml",
                &format!("[rotation]\nallow_short_gates = true\n{field} = \"{value}\"\n"),
            )
            .unwrap();
            assert!(allowed.rotation.allow_short_gates);
            let warnings = allowed.warnings();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains("allow_short_gates = true")
                    && warnings[0].contains("not for production"),
                "{warnings:?}"
            );
            assert_eq!(
                Policy::from_toml("snapshot", &allowed.to_toml()).unwrap(),
                allowed,
                "the flag survives the snapshot"
            );
        }
        let one_day = Policy::from_toml(
            "p.toml",
            "[rotation]\nquiet_period = \"1d\"\nobservation_period = \"24h\"\n",
        )
        .unwrap();
        assert!(!one_day.rotation.allow_short_gates);
        assert_eq!(one_day.warnings(), Vec::<String>::new());
        let e = error("[rotation]\nallow_short_gates = \"yes\"\n");
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(2), Some("rotation.allow_short_gates")),
            "{e}"
        );
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
    fn a_secret_name_template_cannot_name_an_arn_or_odd_characters() {
        for template in [
            "arn:aws:secretsmanager:us-east-1:999999999999:secret:{user_name}",
            "keys/{user_name} copy",
            "keys/{user_name}*",
        ] {
            let text = format!("[delivery]\nname_template = \"{template}\"\n");
            let e = error(&text);
            assert_eq!(
                (e.line, e.field.as_deref()),
                (Some(2), Some("delivery.name_template")),
                "{template}: {e}"
            );
        }
        let ok = Policy::from_toml(
            "p.toml",
            "[delivery]\nname_template = \"a+b=c.d@e-f_g/{account_id}/{user_name}\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    const NOTIFY: &str = r#"
[rotation]
adoption_timeout = "10d"

[notify]
sns_topic_arn = "arn:aws:sns:eu-west-1:123456789012:key-owners"
webhook_url_env = "KEYTURN_WEBHOOK"
owner_tag = "team-email"
on = ["delivered", "blocked"]
warn_before_adoption_timeout = "2d"
"#;

    #[test]
    fn the_notify_section_is_read_field_by_field_and_survives_the_snapshot() {
        let policy = Policy::from_toml("p.toml", NOTIFY).unwrap();
        let notify = policy.notify.as_ref().unwrap();
        let arn = notify.sns_topic_arn.as_ref().unwrap();
        assert_eq!(
            arn.as_str(),
            "arn:aws:sns:eu-west-1:123456789012:key-owners"
        );
        assert_eq!(arn.region(), "eu-west-1");
        assert_eq!(
            notify.webhook_url_env.as_ref().unwrap().as_str(),
            "KEYTURN_WEBHOOK"
        );
        assert_eq!(notify.owner_tag, "team-email");
        assert_eq!(
            notify.on,
            [NotificationKind::Delivered, NotificationKind::Blocked]
        );
        assert_eq!(
            notify.warn_before_adoption_timeout,
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(
            notify.channels(),
            [NotificationChannel::Sns, NotificationChannel::Webhook]
        );
        assert_eq!(
            Policy::from_toml("snapshot", &policy.to_toml()).unwrap(),
            policy
        );
    }

    #[test]
    fn the_notify_section_takes_defaults_and_is_absent_unless_written() {
        assert_eq!(Policy::from_toml("p.toml", "").unwrap().notify, None);
        assert!(
            !Policy::from_toml("p.toml", "")
                .unwrap()
                .to_toml()
                .contains("notify")
        );
        let policy = Policy::from_toml(
            "p.toml",
            "[notify]\nwebhook_url = \"https://hooks.example.com/T1/B2/secret\"\n",
        )
        .unwrap();
        let notify = policy.notify.as_ref().unwrap();
        assert_eq!(notify.owner_tag, DEFAULT_OWNER_TAG);
        assert_eq!(notify.on, NotificationKind::ALL);
        assert_eq!(
            notify.warn_before_adoption_timeout,
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(notify.channels(), [NotificationChannel::Webhook]);
        assert_eq!(
            Policy::from_toml("snapshot", &policy.to_toml()).unwrap(),
            policy
        );
    }

    #[test]
    fn a_webhook_url_never_shows_its_path_or_query() {
        let url = WebhookUrl::new("https://hooks.example.com:8443/services/T0/B0/s3cr3t?token=x")
            .unwrap();
        for shown in [format!("{url}"), format!("{url:?}"), url.redacted()] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("token"),
                "{shown}"
            );
            assert!(shown.contains("hooks.example.com:8443"), "{shown}");
        }
        let e = error("[notify]\nwebhook_url = \"ftp://host/s3cr3t\"\n");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = error("[notify]\nwebhook_url = \"https://user:s3cr3t@host/x\"\n");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn notify_errors_are_located_by_line_and_field() {
        let arn = "sns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n";
        let cases = [
            (
                "[notify]\nsns_topic_arn = \"arn:aws:sqs:us-east-1:123456789012:q\"\n".to_owned(),
                2,
                "notify.sns_topic_arn",
                "SNS topic ARN",
            ),
            (
                "[notify]\nsns_topic_arn = \"arn:aws:sns:us-east-1:1234:t\"\n".to_owned(),
                2,
                "notify.sns_topic_arn",
                "12 digits",
            ),
            (
                "[notify]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:t.fifo\"\n"
                    .to_owned(),
                2,
                "notify.sns_topic_arn",
                "FIFO",
            ),
            (
                "[notify]\n\nwebhook_url = \"hooks.example.com/x\"\n".to_owned(),
                3,
                "notify.webhook_url",
                "https://",
            ),
            (
                "[notify]\nwebhook_url_env = \"1BAD-NAME\"\n".to_owned(),
                2,
                "notify.webhook_url_env",
                "environment variable",
            ),
            (
                format!("[notify]\n{arn}on = [\"delivered\", \"sent\"]\n"),
                3,
                "notify.on",
                "adoption-timeout-approaching",
            ),
            (
                format!("[notify]\n{arn}on = []\n"),
                3,
                "notify.on",
                "at least one",
            ),
            (
                format!("[notify]\n{arn}owner_tag = \"\"\n"),
                3,
                "notify.owner_tag",
                "tag key",
            ),
            (
                format!("[notify]\n{arn}warn_before_adoption_timeout = \"soon\"\n"),
                3,
                "notify.warn_before_adoption_timeout",
                "invalid duration",
            ),
            (
                format!("[notify]\n{arn}warn_before_adoption_timeout = \"30d\"\n"),
                3,
                "notify.warn_before_adoption_timeout",
                "shorter than rotation.adoption_timeout",
            ),
            (
                format!(
                    "[rotation]\nquiet_period = \"1d\"\nadoption_timeout = \"3d\"\n[notify]\n{arn}"
                ),
                4,
                "notify.warn_before_adoption_timeout",
                "shorter than rotation.adoption_timeout",
            ),
            (
                "[notify]\nwebhook_url = \"https://h/x\"\nwebhook_url_env = \"H\"\n".to_owned(),
                3,
                "notify.webhook_url_env",
                "not both",
            ),
            (
                "[scope]\n\n[notify]\nowner_tag = \"team\"\n".to_owned(),
                3,
                "notify",
                "no channel",
            ),
            (
                format!("[notify]\n{arn}topic = \"x\"\n"),
                3,
                "notify.topic",
                "unknown field",
            ),
        ];
        for (text, line, field, words) in cases {
            let e = error(&text);
            assert_eq!(
                (e.line, e.field.as_deref()),
                (Some(line), Some(field)),
                "{text:?} → {e}"
            );
            assert!(e.message.contains(words), "{text:?} → {e}");
        }
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
