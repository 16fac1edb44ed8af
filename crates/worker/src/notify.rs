//! Notifications to key owners: an SNS topic and/or a Slack-compatible webhook, as the
//! policy's `[notify]` section says.
//!
//! The planner says which notifications are due (`rotation::notify`); this module
//! writes the messages, sends them and returns the events that record each outcome.
//! A message names where the new key can be fetched (the secret's ARN, account and
//! region) and never holds a secret. A notification that cannot be sent is recorded
//! with its error code (never the webhook's URL, which may be a secret itself) and
//! never stops or fails a rotation.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sns::Client as SnsClient;
use aws_sdk_sns::config::Region;
use aws_sdk_sns::types::MessageAttributeValue;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyturn_planner::policy::{Notify, Rotation, SnsTopicArn, WebhookUrl, format_duration};
use keyturn_planner::rotation::notify::{DueNotification, adoption_deadline, due_notifications};
use keyturn_planner::rotation::{
    KeyState, NotificationChannel, NotificationKind, RotationEvent, UserState,
};
use keyturn_planner::{CampaignName, UserName};
use serde_json::json;

use crate::error::{AwsFailure, WorkerError};
use crate::org::OrgAccount;

/// How long one webhook request may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a webhook request is tried within one notification (with a short
/// backoff), on a connection failure, a timeout, a 429 or a 5xx.
pub const WEBHOOK_TRIES: u32 = 3;
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);
/// SNS wants a subject of less than 100 ASCII characters, without line breaks.
const SUBJECT_MAX: usize = 99;

/// A notification that could not be sent, reduced to a code: an AWS error code for SNS,
/// `WebhookStatus<code>`, `WebhookTimeout` or `WebhookUnreachable` for the webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notification failed with {code}")]
pub struct NotifyFailure {
    /// The code.
    pub code: String,
}

/// One message, ready for any channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What it is about.
    pub kind: NotificationKind,
    /// A one-line ASCII subject (SNS `Subject`, at most 99 characters).
    pub subject: String,
    /// The whole text.
    pub text: String,
}

impl Message {
    /// The webhook body: Slack-compatible (`text`, plus one `section` block).
    pub fn webhook_json(&self) -> serde_json::Value {
        let text = slack_escape(&self.text);
        json!({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": format!("keyturn · {}", self.kind.as_str())}
                ]}
            ]
        })
    }
}

/// Slack's three reserved characters in text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Who owns a user's keys: the value of the user's `owner_tag` tag when it has one,
/// else the account's email from Organizations.
pub fn owner_of(
    tags: Option<&[(String, String)]>,
    owner_tag: &str,
    account: &OrgAccount,
) -> Option<String> {
    tags.into_iter()
        .flatten()
        .find(|(key, value)| key == owner_tag && !value.trim().is_empty())
        .map(|(_, value)| value.clone())
        .or_else(|| account.email.clone())
}

/// What a message is about.
#[derive(Debug, Clone, Copy)]
pub struct About<'a> {
    /// The campaign.
    pub campaign: &'a CampaignName,
    /// The user's account.
    pub account: &'a OrgAccount,
    /// The user.
    pub user: &'a UserName,
    /// The key's state in the campaign.
    pub key: &'a KeyState,
    /// The owner the message is for.
    pub owner: Option<&'a str>,
    /// The policy's gates.
    pub rules: &'a Rotation,
}

/// Writes the message of one notification. No secret is ever in it: the delivered-key
/// message names the secret (ARN, account, region, version) and the new key's id.
pub fn compose(kind: NotificationKind, about: &About<'_>) -> Message {
    let ks = about.key;
    let account = match about.account.name.as_str() {
        "" => about.account.id.to_string(),
        name => format!("{} ({name})", about.account.id),
    };
    let whose = format!(
        "access key {} of IAM user {} in account {account}",
        ks.key, about.user
    );
    let owner = about
        .owner
        .unwrap_or("unknown (no owner tag, no account email)");
    let new_key = ks
        .new_key
        .as_ref()
        .map_or_else(|| "(none)".to_owned(), ToString::to_string);
    let (arn, version) = ks
        .delivery
        .as_ref()
        .map_or(("(none)", "(none)"), |(a, v)| (a.as_str(), v.as_str()));
    let where_ = secret_location(arn);
    let deadline = adoption_deadline(ks, about.rules).map_or_else(|| "-".to_owned(), when);
    let (subject, body) = match kind {
        NotificationKind::Delivered => (
            format!(
                "keyturn: new access key ready for {} in {}",
                about.user, about.account.id
            ),
            format!(
                "A new access key {new_key} replaces {whose}. Fetch it from AWS Secrets Manager: secret {arn}{where_}, version {version}. Switch every application to it: the old key is deactivated once it shows no use for {quiet}, and if it is still used at {deadline} the rotation is blocked for a human.",
                quiet = format_duration(about.rules.quiet_period),
            ),
        ),
        NotificationKind::Blocked => (
            format!(
                "keyturn: key rotation blocked for {} in {}",
                about.user, about.account.id
            ),
            format!(
                "The rotation of {whose} is blocked: {}. A human must decide; keyturn leaves the key as it is.",
                ks.reason
            ),
        ),
        NotificationKind::Failed => (
            format!(
                "keyturn: key rotation failed for {} in {}",
                about.user, about.account.id
            ),
            format!(
                "The rotation of {whose} failed: {}. A human must look; keyturn leaves the key as it is.",
                ks.reason
            ),
        ),
        NotificationKind::AdoptionTimeoutApproaching => (
            format!(
                "keyturn: old access key still in use for {} in {}",
                about.user, about.account.id
            ),
            format!(
                "The old {whose} is still in use, although its replacement {new_key} was delivered to AWS Secrets Manager secret {arn}{where_}. Switch the applications that use it to the new key: if the old key is still used at {deadline}, the rotation is blocked for a human."
            ),
        ),
    };
    let text = format!("{body}\nOwner: {owner}. Campaign: {}.", about.campaign);
    Message {
        kind,
        subject: sns_subject(&subject, SUBJECT_MAX),
        text,
    }
}

/// " (account A, region R)" from a Secrets Manager ARN.
fn secret_location(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    match parts[..] {
        [_, _, _, region, account, ..] if !region.is_empty() => {
            format!(" (account {account}, region {region})")
        }
        _ => String::new(),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An SNS subject: printable ASCII only (anything else becomes `?`), at most `max`
/// characters (cut with `...`).
fn sns_subject(text: &str, max: usize) -> String {
    let ascii: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if ascii.len() <= max {
        return ascii;
    }
    format!("{}...", &ascii[..max - 3])
}

type Https = HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends messages on the channels a policy configures.
pub struct Notifier {
    sns: Option<(SnsClient, SnsTopicArn)>,
    webhook: Option<(Https, WebhookUrl)>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("sns", &self.sns.as_ref().map(|(_, arn)| arn))
            .field("webhook", &self.webhook.as_ref().map(|(_, url)| url))
            .finish()
    }
}

impl Notifier {
    /// Sets up the channels: the SNS client in the topic's region, with the runner's own
    /// credentials (`base`); the webhook's URL from the policy or from the environment
    /// variable it names. A missing or invalid variable is refused (nothing is sent).
    pub fn from_policy(notify: &Notify, base: &SdkConfig) -> Result<Self, WorkerError> {
        let sns = notify.sns_topic_arn.as_ref().map(|arn| {
            let config = aws_sdk_sns::config::Builder::from(base)
                .region(Region::new(arn.region().to_owned()))
                .build();
            (SnsClient::from_conf(config), arn.clone())
        });
        let url = match (&notify.webhook_url, &notify.webhook_url_env) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(name)) => {
                let value = std::env::var(name.as_str()).map_err(|_| {
                    WorkerError::Rejected(format!(
                        "the policy's notify.webhook_url_env names {name}, which is not set (or not UTF-8)"
                    ))
                })?;
                Some(WebhookUrl::new(value).map_err(|e| {
                    WorkerError::Rejected(format!(
                        "the environment variable {name} (notify.webhook_url_env) is not a webhook URL: {e}"
                    ))
                })?)
            }
            (None, None) => None,
        };
        let webhook = url.map(|url| (https_client(), url));
        Ok(Self { sns, webhook })
    }

    /// Sends one message on one channel; the SNS MessageId when there is one.
    pub async fn send(
        &self,
        channel: NotificationChannel,
        message: &Message,
    ) -> Result<Option<String>, NotifyFailure> {
        match channel {
            NotificationChannel::Sns => {
                let Some((sns, arn)) = &self.sns else {
                    return Err(not_configured());
                };
                publish(sns, arn, message).await
            }
            NotificationChannel::Webhook => {
                let Some((client, url)) = &self.webhook else {
                    return Err(not_configured());
                };
                post(client, url, message).await.map(|()| None)
            }
        }
    }
}

fn not_configured() -> NotifyFailure {
    NotifyFailure {
        code: "ChannelNotConfigured".to_owned(),
    }
}

async fn publish(
    sns: &SnsClient,
    arn: &SnsTopicArn,
    message: &Message,
) -> Result<Option<String>, NotifyFailure> {
    let kind = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(message.kind.as_str())
        .build()
        .map_err(|_| NotifyFailure {
            code: "ConstructionFailure".to_owned(),
        })?;
    sns.publish()
        .topic_arn(arn.as_str())
        .subject(&message.subject)
        .message(&message.text)
        .message_attributes("keyturn_kind", kind)
        .send()
        .await
        .map(|out| out.message_id().map(str::to_owned))
        .map_err(|e| NotifyFailure {
            code: AwsFailure::from_sdk("Publish", &e).code,
        })
}

/// An HTTPS (and HTTP) client on the rustls/aws-lc stack the SDK uses, trusting the
/// system's roots; with none found, only plain-HTTP webhooks can be reached.
fn https_client() -> Https {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let connector = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(builder) => builder.https_or_http().enable_http1().build(),
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates: https webhooks cannot be verified");
            let config = rustls::ClientConfig::builder_with_provider(provider.into())
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .build()
        }
    };
    HttpClient::builder(TokioExecutor::new()).build(connector)
}

/// POSTs the message's JSON, retrying connection failures, timeouts, 429 and 5xx.
async fn post(client: &Https, url: &WebhookUrl, message: &Message) -> Result<(), NotifyFailure> {
    let body = Bytes::from(message.webhook_json().to_string());
    let mut last = NotifyFailure {
        code: "WebhookUnreachable".to_owned(),
    };
    for attempt in 1..=WEBHOOK_TRIES {
        if attempt > 1 {
            tokio::time::sleep(WEBHOOK_BACKOFF * (attempt - 1)).await;
        }
        let request = http::Request::post(url.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "keyturn")
            .body(Full::new(body.clone()))
            .map_err(|_| NotifyFailure {
                code: "WebhookInvalidUrl".to_owned(),
            })?;
        let (code, retry) =
            match tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => return Ok(()),
                Ok(Ok(response)) => {
                    let status = response.status();
                    let retry = status.is_server_error() || status.as_u16() == 429;
                    (format!("WebhookStatus{}", status.as_u16()), retry)
                }
                Ok(Err(e)) if e.is_connect() => ("WebhookUnreachable".to_owned(), true),
                Ok(Err(_)) => ("WebhookError".to_owned(), true),
                Err(_) => ("WebhookTimeout".to_owned(), true),
            };
        tracing::debug!(attempt, code = %code, host = %url, "webhook request failed");
        last = NotifyFailure { code };
        if !retry {
            break;
        }
    }
    Err(last)
}

/// What one user's due notifications should say and to whom.
#[derive(Debug, Clone, Copy)]
pub struct UserContext<'a> {
    /// The campaign.
    pub campaign: &'a CampaignName,
    /// The user's account.
    pub account: &'a OrgAccount,
    /// The user.
    pub user: &'a UserName,
    /// The user's tags as IAM lists them now (`None`: the user is no longer listed).
    pub tags: Option<&'a [(String, String)]>,
}

/// Sends every notification due for a user now and returns the events recording each
/// outcome (one per notification), to append to the user's stream.
pub async fn send_due(
    notifier: &Notifier,
    notify: &Notify,
    rules: &Rotation,
    user: UserContext<'_>,
    state: &UserState,
    now: DateTime<Utc>,
) -> Vec<RotationEvent> {
    let due = due_notifications(state, notify, rules, now);
    if due.is_empty() {
        return Vec::new();
    }
    let owner = owner_of(user.tags, &notify.owner_tag, user.account);
    let mut events = Vec::with_capacity(due.len());
    for DueNotification {
        key,
        kind,
        channel,
        attempt,
    } in due
    {
        let Some(ks) = state.keys.get(&key) else {
            continue;
        };
        let about = About {
            campaign: user.campaign,
            account: user.account,
            user: user.user,
            key: ks,
            owner: owner.as_deref(),
            rules,
        };
        let message = compose(kind, &about);
        match notifier.send(channel, &message).await {
            Ok(message_id) => {
                tracing::info!(account = %user.account.id, user = %user.user, key = %key, kind = kind.as_str(), channel = channel.as_str(), "notification sent");
                events.push(RotationEvent::NotificationSent {
                    key,
                    kind,
                    channel,
                    owner: owner.clone(),
                    new_key: ks.new_key.clone().filter(|_| {
                        matches!(
                            kind,
                            NotificationKind::Delivered
                                | NotificationKind::AdoptionTimeoutApproaching
                        )
                    }),
                    message_id,
                });
            }
            Err(failure) => {
                tracing::warn!(account = %user.account.id, user = %user.user, key = %key, kind = kind.as_str(), channel = channel.as_str(), code = %failure.code, attempt, "notification failed; the rotation goes on");
                events.push(RotationEvent::NotificationFailed {
                    key,
                    kind,
                    channel,
                    attempt,
                    error_code: failure.code,
                });
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use keyturn_planner::rotation::Path;
    use keyturn_planner::{AccessKeyId, AccountId};

    use super::*;

    fn account(email: Option<&str>) -> OrgAccount {
        OrgAccount {
            id: AccountId::new("111111111111").unwrap(),
            name: "payments".into(),
            email: email.map(str::to_owned),
        }
    }

    /// A one-shot HTTP server answering each request with the next status of `statuses`;
    /// returns its URL and a counter of the requests it got.
    async fn server(
        statuses: Vec<u16>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/s3cr3t", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            for status in statuses {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buffer = vec![0u8; 65536];
                let mut got = 0;
                // Read the head and the body (Content-Length) before answering.
                loop {
                    let n = socket.read(&mut buffer[got..]).await.unwrap();
                    got += n;
                    let text = String::from_utf8_lossy(&buffer[..got]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if got >= end + 4 + length || n == 0 {
                            break;
                        }
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
                socket.shutdown().await.ok();
            }
        });
        (url, count)
    }

    fn message() -> Message {
        Message {
            kind: NotificationKind::Blocked,
            subject: "s".into(),
            text: "t".into(),
        }
    }

    #[tokio::test]
    async fn the_webhook_retries_5xx_and_429_but_not_other_client_errors() {
        use std::sync::atomic::Ordering;
        let client = https_client();
        let (url, count) = server(vec![503, 429, 200]).await;
        let url = WebhookUrl::new(url).unwrap();
        assert_eq!(post(&client, &url, &message()).await, Ok(()));
        assert_eq!(count.load(Ordering::SeqCst), 3);

        let (url, count) = server(vec![404, 200]).await;
        let url = WebhookUrl::new(url).unwrap();
        let failure = post(&client, &url, &message()).await.unwrap_err();
        assert_eq!(failure.code, "WebhookStatus404");
        assert_eq!(count.load(Ordering::SeqCst), 1, "a 404 is not retried");

        let (url, count) = server(vec![500, 500, 500, 200]).await;
        let url = WebhookUrl::new(url).unwrap();
        let failure = post(&client, &url, &message()).await.unwrap_err();
        assert_eq!(failure.code, "WebhookStatus500");
        assert_eq!(count.load(Ordering::SeqCst), WEBHOOK_TRIES as usize);
        assert!(!failure.to_string().contains("s3cr3t"), "{failure}");
    }

    #[test]
    fn a_webhook_variable_that_is_not_set_refuses_the_run_without_its_value() {
        let notify = keyturn_planner::Policy::from_toml(
            "p.toml",
            "[notify]\nwebhook_url_env = \"KEYTURN_UNIT_TEST_UNSET_HOOK\"\n",
        )
        .unwrap()
        .notify
        .unwrap();
        let base = SdkConfig::builder().build();
        let e = Notifier::from_policy(&notify, &base).unwrap_err();
        assert!(matches!(e, WorkerError::Rejected(_)), "{e}");
        assert!(
            e.to_string().contains("KEYTURN_UNIT_TEST_UNSET_HOOK"),
            "{e}"
        );
    }

    #[test]
    fn the_owner_comes_from_the_tag_then_the_account_email() {
        let tags = vec![
            ("team".to_owned(), "x".to_owned()),
            ("owner".to_owned(), "alice@example.com".to_owned()),
        ];
        let with_email = account(Some("root@example.com"));
        assert_eq!(
            owner_of(Some(&tags), "owner", &with_email).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            owner_of(Some(&tags), "contact", &with_email).as_deref(),
            Some("root@example.com")
        );
        assert_eq!(
            owner_of(None, "owner", &with_email).as_deref(),
            Some("root@example.com")
        );
        assert_eq!(owner_of(Some(&tags), "contact", &account(None)), None);
    }

    #[test]
    fn a_delivery_message_says_where_to_fetch_the_key_and_webhook_json_is_slack_shaped() {
        let old = AccessKeyId::new("AKIAOLDKEY0000000001").unwrap();
        let new = AccessKeyId::new("AKIANEWKEY0000000002").unwrap();
        let at = Utc::now();
        let arn = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:keyturn/app-AbCdEf";
        let events = [
            RotationEvent::KeyEnrolled {
                key: old.clone(),
                path: Path::Rotate,
                reason: "old".into(),
                created_at: at,
                last_used_at: None,
            },
            RotationEvent::SecretDelivered {
                key: old.clone(),
                new_key: new.clone(),
                secret_arn: arn.into(),
                version_id: "v-1".into(),
                recovered: false,
            },
            RotationEvent::ReplacementVerified {
                key: old.clone(),
                new_key: new.clone(),
                caller_arn: "arn:aws:iam::111111111111:user/app".into(),
            },
        ];
        let state = UserState::from_events(events.iter().map(|e| (e, at)));
        let campaign = CampaignName::new("q3").unwrap();
        let user = UserName::new("app").unwrap();
        let acct = account(None);
        let rules = Rotation::default();
        let about = About {
            campaign: &campaign,
            account: &acct,
            user: &user,
            key: &state.keys[&old],
            owner: Some("alice@example.com"),
            rules: &rules,
        };
        let m = compose(NotificationKind::Delivered, &about);
        for words in [
            arn,
            "account 111111111111, region eu-west-1",
            "v-1",
            "AKIANEWKEY0000000002",
            "AKIAOLDKEY0000000001",
            "alice@example.com",
            "Campaign: q3",
        ] {
            assert!(m.text.contains(words), "{words:?} missing from {}", m.text);
        }
        assert!(
            m.subject.len() <= SUBJECT_MAX && m.subject.is_ascii(),
            "{}",
            m.subject
        );
        let long = super::sns_subject(&format!("{}é\n", "x".repeat(200)), SUBJECT_MAX);
        assert_eq!(long.len(), SUBJECT_MAX);
        assert!(long.is_ascii() && long.ends_with("..."), "{long}");
        assert_eq!(super::sns_subject("a é\nb", SUBJECT_MAX), "a ??b");
        let json = m.webhook_json();
        assert_eq!(json["text"], json["blocks"][0]["text"]["text"]);
        assert_eq!(json["blocks"][0]["type"], "section");
        let blocked = compose(NotificationKind::Blocked, &about);
        assert!(blocked.subject.contains("blocked"), "{}", blocked.subject);
        assert!(
            slack_escape("a <b> & c") == "a &lt;b&gt; &amp; c",
            "Slack's reserved characters are escaped"
        );
    }
}
