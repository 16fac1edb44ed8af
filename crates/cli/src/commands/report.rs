//! `keyturn report NAME --format html|csv|json`: evidence for auditors. The HTML is one
//! self-contained file (inline CSS and SVG charts, no network fetches).

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use keyturn_planner::CampaignName;
use keyturn_worker::campaign::load_state;
use keyturn_worker::campaign::report::{Counts, Report, compute};
use keyturn_worker::inventory;
use serde_json::{Value, json};

use crate::exit::{Exit, Failure, Outcome};

/// Computes and writes the report.
pub async fn run(journal: &str, name: &CampaignName, format: &str, out: Option<&Path>) -> Outcome {
    let location = super::journal::parse(journal)?;
    let run_id = super::new_run_id();
    let sessions = super::sessions("report", &run_id).await?;
    let journal = super::open_journal(&location, &sessions).await?;
    let state = load_state(journal.as_ref(), name).await?;
    super::warn_about(&state.campaign.policy);
    let inventory = inventory::collect(
        &sessions,
        &state.campaign.policy.scope,
        usize::from(inventory::DEFAULT_CONCURRENCY),
    )
    .await?;
    let report = compute(&state, &inventory, Utc::now());
    let text = match format {
        "json" => {
            serde_json::to_string_pretty(&to_json(name, &report))
                .map_err(|e| Failure::new(Exit::Internal, e))?
                + "\n"
        }
        "csv" => to_csv(&report).map_err(|e| Failure::new(Exit::Internal, e))?,
        _ => to_html(name, &report),
    };
    match out {
        Some(path) => std::fs::write(path, text).map_err(|e| {
            Failure::new(
                Exit::InvalidInput,
                format!("cannot write {}: {e}", path.display()),
            )
        })?,
        None => print!("{text}"),
    }
    super::inventory::report_failures(&inventory);
    Ok(if inventory.failures.is_empty() {
        Exit::Success
    } else {
        Exit::Partial
    })
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn counts_json(c: &Counts) -> Value {
    json!({
        "in_scope_at_start": c.in_scope_at_start,
        "rotated": c.rotated,
        "retired": c.retired,
        "deleted_inactive": c.deleted_inactive,
        "blocked": c.blocked,
        "skipped": c.skipped,
        "failed": c.failed,
        "in_progress": c.in_progress,
        "non_compliant_now": c.non_compliant_now,
    })
}

fn to_json(name: &CampaignName, r: &Report) -> Value {
    json!({
        "campaign": name.as_str(),
        "generated_at": time(r.generated_at),
        "controls": r.controls.iter().map(|c| json!({"id": c.id, "title": c.title, "failing_keys": c.failing_keys, "status": if c.failing_keys == 0 { "pass" } else { "fail" }})).collect::<Vec<_>>(),
        "overall": counts_json(&r.overall),
        "accounts": r.accounts.iter().map(|(id, c)| { let mut v = counts_json(c); v["account_id"] = json!(id.as_str()); v }).collect::<Vec<_>>(),
        "exceptions": r.exceptions.iter().map(|e| json!({"account_id": e.account_id.as_str(), "user_name": e.user_name.as_str(), "access_key_id": e.access_key_id.as_str(), "state": e.state, "reason": e.reason})).collect::<Vec<_>>(),
        "rotations": r.rotations.iter().map(|x| json!({"account_id": x.account_id.as_str(), "user_name": x.user_name.as_str(), "old_access_key_id": x.old_key.as_str(), "new_access_key_id": x.new_key.as_ref().map(|k| k.as_str()), "started_at": time(x.started_at), "finished_at": time(x.finished_at), "duration_seconds": (x.finished_at - x.started_at).num_seconds()})).collect::<Vec<_>>(),
        "non_compliant_now": r.non_compliant.iter().map(|n| json!({"account_id": n.key.account_id.as_str(), "user_name": n.key.user_name.as_str(), "access_key_id": n.key.access_key_id.as_str(), "age_days": n.key.age_days(r.generated_at), "controls": n.controls, "campaign_state": n.campaign_state, "reason": n.reason})).collect::<Vec<_>>(),
        "age_days_before": r.ages_before,
        "age_days_after": r.ages_after,
        "progress": r.progress.iter().map(|(t, n)| json!({"at": time(*t), "settled": n})).collect::<Vec<_>>(),
        "unread_accounts": r.unread_accounts.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
    })
}

const COLUMNS: [&str; 10] = [
    "account_id",
    "in_scope_at_start",
    "rotated",
    "retired",
    "deleted_inactive",
    "blocked",
    "skipped",
    "failed",
    "in_progress",
    "non_compliant_now",
];

fn counts_cells(c: &Counts) -> [usize; 9] {
    [
        c.in_scope_at_start,
        c.rotated,
        c.retired,
        c.deleted_inactive,
        c.blocked,
        c.skipped,
        c.failed,
        c.in_progress,
        c.non_compliant_now,
    ]
}

fn to_csv(r: &Report) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(COLUMNS)?;
    for (id, c) in &r.accounts {
        writer.write_record(
            std::iter::once(id.to_string()).chain(counts_cells(c).iter().map(|n| n.to_string())),
        )?;
    }
    writer.write_record(
        std::iter::once("ALL".to_owned())
            .chain(counts_cells(&r.overall).iter().map(|n| n.to_string())),
    )?;
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Age buckets of the histograms, in days.
const BUCKETS: [(i64, i64, &str); 6] = [
    (0, 30, "0–30"),
    (30, 60, "30–60"),
    (60, 90, "60–90"),
    (90, 180, "90–180"),
    (180, 365, "180–365"),
    (365, i64::MAX, "365+"),
];

fn histogram(title: &str, ages: &[i64], id: &str) -> String {
    let counts: Vec<usize> = BUCKETS
        .iter()
        .map(|(lo, hi, _)| ages.iter().filter(|a| **a >= *lo && **a < *hi).count())
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h, bar) = (420, 180, 60);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg id=\"{id}\" role=\"img\" viewBox=\"0 0 {w} {}\" width=\"{w}\" height=\"{}\">",
        esc(title),
        h + 40,
        h + 40
    );
    for (i, ((lo, _, label), n)) in BUCKETS.iter().zip(&counts).enumerate() {
        let height = (*n as f64 / max as f64 * (h - 20) as f64).round() as i64;
        let x = 10 + i as i64 * (bar + 8);
        let color = if *lo >= 90 { "#c0392b" } else { "#2e86c1" };
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{height}\" fill=\"{color}\"><title>{label} days: {n}</title></rect><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{n}</text><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{label}</text>",
            h - height,
            x + bar / 2,
            h - height - 4,
            x + bar / 2,
            h + 16
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn progress_chart(points: &[(DateTime<Utc>, usize)], total: usize) -> String {
    let (w, h) = (420, 180);
    let mut svg = format!(
        "<figure><figcaption>Keys settled over time (of {total})</figcaption><svg id=\"progress\" role=\"img\" viewBox=\"0 0 {w} {}\" width=\"{w}\" height=\"{}\">",
        h + 30,
        h + 30
    );
    let _ = write!(
        svg,
        "<line x1=\"30\" y1=\"{h}\" x2=\"{}\" y2=\"{h}\" stroke=\"#888\"/><line x1=\"30\" y1=\"10\" x2=\"30\" y2=\"{h}\" stroke=\"#888\"/>",
        w - 10
    );
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let span = (last.0 - first.0).num_milliseconds().max(1) as f64;
        let top = total.max(1) as f64;
        let coords: Vec<String> = points
            .iter()
            .map(|(t, n)| {
                let x = 30.0 + (*t - first.0).num_milliseconds() as f64 / span * (w - 50) as f64;
                let y = h as f64 - *n as f64 / top * (h - 20) as f64;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#27ae60\" stroke-width=\"3\" points=\"{}\"/>",
            coords.join(" ")
        );
        let _ = write!(
            svg,
            "<text x=\"30\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            h + 20,
            esc(&time(first.0)),
            w - 10,
            h + 20,
            esc(&time(last.0))
        );
    } else {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">nothing settled yet</text>",
            w / 2,
            h / 2
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut html = String::from("<table><thead><tr>");
    for h in headers {
        let _ = write!(html, "<th>{}</th>", esc(h));
    }
    html.push_str("</tr></thead><tbody>");
    let mut empty = true;
    for row in rows {
        empty = false;
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{}</td>", esc(&cell));
        }
        html.push_str("</tr>");
    }
    if empty {
        let _ = write!(html, "<tr><td colspan=\"{}\">none</td></tr>", headers.len());
    }
    html.push_str("</tbody></table>");
    html
}

fn to_html(name: &CampaignName, r: &Report) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>keyturn evidence: {n}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}\
         th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}} th{{background:#f2f2f2}}\
         .pass{{color:#1e8449;font-weight:bold}} .fail{{color:#c0392b;font-weight:bold}} .charts{{display:flex;gap:2em;flex-wrap:wrap}}\
         figure{{margin:0}} figcaption{{font-weight:bold;margin-bottom:.5em}}</style></head><body>\
         <h1>Access key rotation evidence: campaign {n}</h1><p>Generated {g} by keyturn from its journal (what happened) and a fresh read of IAM (what is true now).</p>",
        n = esc(name.as_str()),
        g = esc(&time(r.generated_at))
    );
    html.push_str("<h2>Controls</h2>");
    html.push_str(&table(
        &["control", "requirement", "status", "failing keys now"],
        r.controls.iter().map(|c| {
            vec![
                c.id.to_owned(),
                c.title.clone(),
                if c.failing_keys == 0 {
                    "PASS".into()
                } else {
                    "FAIL".into()
                },
                c.failing_keys.to_string(),
            ]
        }),
    ));
    html.push_str("<h2>Overall</h2>");
    let labels = [
        "in scope at start",
        "rotated",
        "retired (unused)",
        "Inactive deleted",
        "blocked",
        "skipped",
        "failed",
        "in progress",
        "non-compliant now",
    ];
    html.push_str(&table(
        &labels,
        [counts_cells(&r.overall)
            .iter()
            .map(|n| n.to_string())
            .collect()],
    ));
    html.push_str("<div class=\"charts\">");
    html.push_str(&histogram(
        "Key age (days) when the campaign started",
        &r.ages_before,
        "ages-before",
    ));
    html.push_str(&histogram(
        "Age (days) of Active keys now",
        &r.ages_after,
        "ages-after",
    ));
    html.push_str(&progress_chart(&r.progress, r.overall.in_scope_at_start));
    html.push_str("</div><h2>Per account</h2>");
    let mut headers = vec!["account"];
    headers.extend_from_slice(&labels);
    html.push_str(&table(
        &headers,
        r.accounts.iter().map(|(id, c)| {
            std::iter::once(id.to_string())
                .chain(counts_cells(c).iter().map(|n| n.to_string()))
                .collect()
        }),
    ));
    html.push_str("<h2>Exceptions: blocked, skipped, failed and unfinished keys</h2>");
    html.push_str(&table(
        &["account", "user", "access key", "state", "reason"],
        r.exceptions.iter().map(|e| {
            vec![
                e.account_id.to_string(),
                e.user_name.to_string(),
                e.access_key_id.to_string(),
                e.state.to_owned(),
                e.reason.clone(),
            ]
        }),
    ));
    html.push_str("<h2>Non-compliant now</h2>");
    html.push_str(&table(
        &[
            "account",
            "user",
            "access key",
            "age (days)",
            "controls",
            "campaign state",
            "reason",
        ],
        r.non_compliant.iter().map(|n| {
            vec![
                n.key.account_id.to_string(),
                n.key.user_name.to_string(),
                n.key.access_key_id.to_string(),
                n.key.age_days(r.generated_at).to_string(),
                n.controls.join(", "),
                n.campaign_state.unwrap_or("not in the campaign").to_owned(),
                n.reason.clone().unwrap_or_default(),
            ]
        }),
    ));
    html.push_str("<h2>Rotations</h2>");
    html.push_str(&table(
        &[
            "account",
            "user",
            "old key",
            "new key",
            "started",
            "old key deleted",
            "took",
        ],
        r.rotations.iter().map(|x| {
            let took = humantime::format_duration(std::time::Duration::from_secs(
                (x.finished_at - x.started_at).num_seconds().max(0) as u64,
            ));
            vec![
                x.account_id.to_string(),
                x.user_name.to_string(),
                x.old_key.to_string(),
                x.new_key
                    .as_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
                time(x.started_at),
                time(x.finished_at),
                took.to_string(),
            ]
        }),
    ));
    if !r.unread_accounts.is_empty() {
        let _ = write!(
            html,
            "<p class=\"fail\">Accounts that could not be read now: {}</p>",
            esc(&r
                .unread_accounts
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    html.push_str("</body></html>\n");
    html
}
