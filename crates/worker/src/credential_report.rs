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

    /// The key slots the report shows for `user` (empty when the user had no key),
    /// or `None` when the user is not in the report (created after it).
    pub fn user_keys(&self, user: &str) -> Option<&[ReportKey]> {
        self.users.get(user).map(Vec::as_slice)
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

/// What one GetCredentialReport answered.
enum Got {
    /// The report.
    Report(CredentialReport),
    /// `ReportNotPresent` or `ReportExpired`: it must be generated.
    Missing,
    /// `ReportInProgress`: a generation is under way.
    InProgress,
}

async fn get(iam: &IamClient) -> Result<Got, AwsFailure> {
    match iam.get_credential_report().send().await {
        Ok(out) => {
            let content = out.content().map(|b| b.as_ref()).unwrap_or_default();
            let report = CredentialReport::parse(content).map_err(|message| AwsFailure {
                operation: "GetCredentialReport",
                code: "MalformedReport".to_owned(),
                message,
            })?;
            Ok(Got::Report(report))
        }
        Err(e) => {
            let failure = AwsFailure::from_sdk("GetCredentialReport", &e);
            match failure.code.as_str() {
                "ReportNotPresent" | "ReportExpired" => Ok(Got::Missing),
                "ReportInProgress" => Ok(Got::InProgress),
                _ => Err(failure),
            }
        }
    }
}

/// Asks IAM for a report. IAM keeps a report for four hours: while it is that recent the
/// answer is `COMPLETE` at once and nothing is generated; otherwise a new one is started.
async fn generate(iam: &IamClient) -> Result<(), AwsFailure> {
    iam.generate_credential_report()
        .send()
        .await
        .map(drop)
        .map_err(|e| AwsFailure::from_sdk("GenerateCredentialReport", &e))
}

/// Downloads the account's credential report: GenerateCredentialReport, then
/// GetCredentialReport — two calls whether a recent report exists (IAM reuses it) or a
/// new one is made (a small account's is ready by the time it is asked for); while the
/// answer is `ReportInProgress`, GetCredentialReport again with backoff, for at most two
/// minutes. Generating first costs one call more than reading first when a report under
/// four hours old exists, and one call less when it does not, which is the usual case
/// for a scheduled run (daily, say): the first read of the day always generates.
pub async fn fetch(iam: &IamClient) -> Result<CredentialReport, AwsFailure> {
    fetch_within(iam, GENERATION_TIMEOUT).await
}

async fn fetch_within(iam: &IamClient, timeout: Duration) -> Result<CredentialReport, AwsFailure> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    generate(iam).await?;
    loop {
        match get(iam).await? {
            Got::Report(report) => return Ok(report),
            Got::InProgress => {}
            // Expired or gone between the two calls: ask for a new one.
            Got::Missing => {
                generate(iam).await?;
            }
        }
        if started.elapsed() > timeout {
            return Err(AwsFailure {
                operation: "GetCredentialReport",
                code: "ReportTimeout".to_owned(),
                message: format!("the credential report was not ready after {timeout:?}"),
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

    mod fetching {
        use aws_config::BehaviorVersion;
        use aws_credential_types::Credentials;
        use aws_sdk_iam::operation::generate_credential_report::GenerateCredentialReportOutput;
        use aws_sdk_iam::operation::get_credential_report::{
            GetCredentialReportError, GetCredentialReportInput, GetCredentialReportOutput,
        };
        use aws_sdk_iam::primitives::Blob;
        use aws_sdk_iam::types::ReportStateType;
        use aws_smithy_mocks::{
            MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
        };

        use super::super::*;
        use super::HEADER;

        fn client(rules: &[&Rule]) -> IamClient {
            let interceptor = rules.iter().fold(
                MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
                |i, r| i.with_rule(r),
            );
            let config = aws_sdk_iam::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(aws_sdk_iam::config::Region::new("us-east-1"))
                .credentials_provider(Credentials::new("AKIDTEST", "x", None, None, "test"))
                .http_client(create_mock_http_client())
                .interceptor(interceptor)
                .build();
            IamClient::from_conf(config)
        }

        /// IAM's query-protocol error body for `code`.
        fn error(code: &str) -> String {
            format!(
                "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{code}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
            )
        }

        fn report() -> GetCredentialReportOutput {
            let csv = format!(
                "{HEADER}\napp,arn,2020-01-01T00:00:00+00:00,false,N/A,N/A,N/A,false,true,2026-07-01T12:00:00+00:00,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n"
            );
            GetCredentialReportOutput::builder()
                .content(Blob::new(csv))
                .build()
        }

        type GetRule = aws_smithy_mocks::RuleBuilder<
            GetCredentialReportInput,
            GetCredentialReportOutput,
            GetCredentialReportError,
        >;

        fn get_rule() -> GetRule {
            mock!(aws_sdk_iam::Client::get_credential_report).match_requests(|_| true)
        }

        fn generate_rule(state: ReportStateType) -> Rule {
            mock!(aws_sdk_iam::Client::generate_credential_report).then_output(move || {
                GenerateCredentialReportOutput::builder()
                    .state(state.clone())
                    .build()
            })
        }

        #[tokio::test]
        async fn a_recent_report_costs_generate_and_get() {
            let get = get_rule().then_output(report);
            let generate = generate_rule(ReportStateType::Complete);
            let iam = client(&[&get, &generate]);
            let fetched = fetch(&iam).await.unwrap();
            assert_eq!(fetched.user_keys("app").map(<[_]>::len), Some(1));
            assert_eq!((generate.num_calls(), get.num_calls()), (1, 1));
        }

        #[tokio::test]
        async fn a_new_report_is_generated_once_then_polled_with_get() {
            let get = get_rule()
                .sequence()
                .http_status(404, Some(error("ReportInProgress")))
                .times(2)
                .output(report)
                .build();
            let generate = generate_rule(ReportStateType::Started);
            let iam = client(&[&get, &generate]);
            let fetched = fetch(&iam).await.unwrap();
            assert!(fetched.user_keys("app").is_some());
            assert!(fetched.user_keys("other").is_none());
            assert_eq!(
                (generate.num_calls(), get.num_calls()),
                (1, 3),
                "Generate, Get twice in progress, Get: never Generate again"
            );
        }

        #[tokio::test]
        async fn a_report_gone_between_the_calls_is_generated_again() {
            let get = get_rule()
                .sequence()
                .http_status(410, Some(error("ReportExpired")))
                .output(report)
                .build();
            let generate = generate_rule(ReportStateType::Complete);
            let iam = client(&[&get, &generate]);
            fetch(&iam).await.unwrap();
            assert_eq!((generate.num_calls(), get.num_calls()), (2, 2));
        }

        #[tokio::test]
        async fn a_report_that_never_comes_times_out() {
            let get = get_rule()
                .sequence()
                .http_status(404, Some(error("ReportInProgress")))
                .repeatedly()
                .build();
            let generate = generate_rule(ReportStateType::Inprogress);
            let iam = client(&[&get, &generate]);
            let err = fetch_within(&iam, Duration::from_millis(250))
                .await
                .unwrap_err();
            assert_eq!(err.code, "ReportTimeout");
            assert_eq!(generate.num_calls(), 1, "generated once, then only polled");
            assert!(get.num_calls() >= 3);
        }

        #[tokio::test]
        async fn other_errors_are_returned_with_their_code() {
            let get = get_rule()
                .sequence()
                .http_status(403, Some(error("AccessDenied")))
                .build();
            let generate = generate_rule(ReportStateType::Complete);
            let iam = client(&[&get, &generate]);
            let err = fetch(&iam).await.unwrap_err();
            assert_eq!(
                (err.operation, err.code.as_str()),
                ("GetCredentialReport", "AccessDenied")
            );
        }
    }

    #[test]
    fn a_report_without_key_columns_is_refused() {
        let err = CredentialReport::parse(b"user,arn\napp,arn\n").unwrap_err();
        assert!(err.contains("access_key_1_active"), "{err}");
    }
}
