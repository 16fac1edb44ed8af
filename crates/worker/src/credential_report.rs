//! The IAM credential report: last use of every key of an account in two calls.
//!
//! The report gives, per user, two key slots with their status, creation ("last
//! rotated") and last use, but no key ids. keyturn matches a slot to a key by its
//! creation time; a key the report cannot place (created after the report, or two keys
//! created in the same second) falls back to GetAccessKeyLastUsed. AWS regenerates the
//! report at most every four hours, so its last-use data can be that old: fine for an
//! inventory, and the rotation gates always ask GetAccessKeyLastUsed fresh.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_iam::Client as IamClient;
use aws_sdk_iam::types::ReportStateType;
use chrono::{DateTime, Utc};
use keyturn_planner::inventory::LastUse;

use crate::error::AwsFailure;

/// One key slot of one user in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKey {
    /// `access_key_N_active`.
    pub active: bool,
    /// `access_key_N_last_rotated`: the key's creation time.
    pub created_at: DateTime<Utc>,
    /// `access_key_N_last_used_*`, `None` when never used.
    pub last_used: Option<LastUse>,
}

/// The report, keyed by user name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialReport {
    users: HashMap<String, Vec<ReportKey>>,
}

impl CredentialReport {
    /// The last use of the key of `user` created at `created_at`: `Some(last_use)` when
    /// exactly one slot matches that creation time (to the second), `None` when the
    /// report cannot place the key.
    pub fn last_used(&self, user: &str, created_at: DateTime<Utc>) -> Option<Option<LastUse>> {
        let slots = self.users.get(user)?;
        let mut matching = slots
            .iter()
            .filter(|k| k.created_at.timestamp() == created_at.timestamp());
        match (matching.next(), matching.next()) {
            (Some(slot), None) => Some(slot.last_used.clone()),
            _ => None,
        }
    }

    /// Parses the report's CSV text.
    pub fn parse(csv_text: &[u8]) -> Result<Self, String> {
        let mut reader = csv::Reader::from_reader(csv_text);
        let headers = reader
            .headers()
            .map_err(|e| format!("credential report header: {e}"))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| format!("credential report has no column {name}"))
        };
        let user_col = column("user")?;
        let slots: Vec<[usize; 5]> = (1..=2)
            .map(|n| {
                Ok([
                    column(&format!("access_key_{n}_active"))?,
                    column(&format!("access_key_{n}_last_rotated"))?,
                    column(&format!("access_key_{n}_last_used_date"))?,
                    column(&format!("access_key_{n}_last_used_service"))?,
                    column(&format!("access_key_{n}_last_used_region"))?,
                ])
            })
            .collect::<Result<_, String>>()?;

        let mut users = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| format!("credential report row: {e}"))?;
            let field = |i: usize| record.get(i).unwrap_or("");
            let user = field(user_col);
            if user == "<root_account>" {
                continue;
            }
            let mut keys = Vec::new();
            for [active, rotated, used_date, used_service, used_region] in &slots {
                let Some(created_at) = report_time(field(*rotated)) else {
                    continue;
                };
                let last_used = report_time(field(*used_date)).map(|at| LastUse {
                    at,
                    service: report_text(field(*used_service)),
                    region: report_text(field(*used_region)),
                });
                keys.push(ReportKey {
                    active: field(*active) == "true",
                    created_at,
                    last_used,
                });
            }
            users.insert(user.to_owned(), keys);
        }
        Ok(Self { users })
    }
}

/// A report time, or `None` for `N/A`, `no_information` and the like.
fn report_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn report_text(text: &str) -> Option<String> {
    (!text.is_empty() && text != "N/A" && text != "no_information").then(|| text.to_owned())
}

/// How long to wait for IAM to generate a report before giving up.
const GENERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Generates (or reuses) the account's credential report and downloads it.
pub async fn fetch(iam: &IamClient) -> Result<CredentialReport, AwsFailure> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let generated = iam
            .generate_credential_report()
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("GenerateCredentialReport", &e))?;
        if generated.state() == Some(&ReportStateType::Complete) {
            match iam.get_credential_report().send().await {
                Ok(out) => {
                    let content = out.content().map(|b| b.as_ref()).unwrap_or_default();
                    return CredentialReport::parse(content).map_err(|message| AwsFailure {
                        operation: "GetCredentialReport",
                        code: "MalformedReport".to_owned(),
                        message,
                    });
                }
                Err(e) => {
                    let failure = AwsFailure::from_sdk("GetCredentialReport", &e);
                    if !matches!(
                        failure.code.as_str(),
                        "ReportInProgress" | "ReportNotPresent" | "ReportExpired"
                    ) {
                        return Err(failure);
                    }
                }
            }
        }
        if started.elapsed() > GENERATION_TIMEOUT {
            return Err(AwsFailure {
                operation: "GenerateCredentialReport",
                code: "ReportTimeout".to_owned(),
                message: format!(
                    "the credential report was not ready after {GENERATION_TIMEOUT:?}"
                ),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,cert_1_last_rotated,cert_2_active,cert_2_last_rotated";

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn slots_are_matched_to_keys_by_creation_second() {
        let csv = format!(
            "{HEADER}\n<root_account>,arn,2020-01-01T00:00:00+00:00,not_supported,N/A,not_supported,not_supported,false,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n\
             app,arn,2020-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,true,2026-07-01T12:00:00+00:00,2026-11-25T08:00:00+00:00,eu-west-1,s3,false,2026-08-01T00:00:00+00:00,N/A,N/A,N/A,false,N/A,false,N/A\n"
        );
        let report = CredentialReport::parse(csv.as_bytes()).unwrap();
        let used = report
            .last_used("app", at("2026-07-01T12:00:00.400Z"))
            .unwrap()
            .unwrap();
        assert_eq!(used.at, at("2026-11-25T08:00:00Z"));
        assert_eq!(
            (used.service.as_deref(), used.region.as_deref()),
            (Some("s3"), Some("eu-west-1"))
        );
        assert_eq!(
            report.last_used("app", at("2026-08-01T00:00:00Z")),
            Some(None),
            "never used"
        );
        assert_eq!(
            report.last_used("app", at("2026-09-01T00:00:00Z")),
            None,
            "a key the report does not know"
        );
        assert_eq!(
            report.last_used("other", at("2026-07-01T12:00:00Z")),
            None,
            "a user created after the report"
        );
        assert_eq!(
            report.last_used("<root_account>", at("2020-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn two_keys_created_in_the_same_second_are_not_guessed() {
        let csv = format!(
            "{HEADER}\napp,arn,2020-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,true,2026-07-01T12:00:00+00:00,2026-11-25T08:00:00+00:00,eu-west-1,s3,true,2026-07-01T12:00:00+00:00,N/A,N/A,N/A,false,N/A,false,N/A\n"
        );
        let report = CredentialReport::parse(csv.as_bytes()).unwrap();
        assert_eq!(report.last_used("app", at("2026-07-01T12:00:00Z")), None);
    }

    #[test]
    fn a_report_without_key_columns_is_refused() {
        let err = CredentialReport::parse(b"user,arn\napp,arn\n").unwrap_err();
        assert!(err.contains("access_key_1_active"), "{err}");
    }
}
