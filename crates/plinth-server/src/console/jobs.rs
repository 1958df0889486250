//! Console pages for jobs: the list, and one job with its attempts and the tail of its log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use plinth_core::CoreError;
use plinth_exec::LogStream;
use plinth_types::job::Job;
use serde::Serialize;

use super::PageResult;
use super::chart::{Chart, FULL_WIDTH, LegendItem, Rect, Text, fmt_num};
use super::render::{OrPage, page};
use super::session::Session;
use super::views::{Me, QueueRow};
use crate::AppState;
use crate::jobs::QueueUsage;

/// The last bytes of the log shown on a job's page.
const LOG_TAIL: u64 = 16 * 1024;

#[derive(Debug, Serialize)]
struct JobRow {
    name: String,
    team: String,
    queue: String,
    state: String,
    attempts: usize,
    command: String,
    reason: String,
    submitted_at: String,
}

fn row(j: &Job) -> JobRow {
    JobRow {
        name: j.name.clone(),
        team: j.spec.team.clone(),
        queue: j.spec.queue.clone(),
        state: j.status.state.as_str().to_string(),
        attempts: j.status.attempts.len(),
        command: j.spec.command.join(" "),
        reason: if j.status.state.is_terminal() {
            j.status.message.clone()
        } else {
            j.status
                .wait_reason
                .clone()
                .or_else(|| j.status.message.clone())
        }
        .unwrap_or_default(),
        submitted_at: j.status.submitted_at.clone(),
    }
}

fn unavailable() -> CoreError {
    CoreError::invalid("the job controller does not run in this server")
}

#[derive(Debug, Serialize)]
struct JobsPage {
    jobs: Vec<JobRow>,
}

pub(super) async fn jobs(State(s): State<AppState>, Session(who): Session) -> PageResult {
    let jobs = match &s.jobs {
        Some(c) => c.list(&who, None, None).await,
        None => Err(unavailable()),
    }
    .or_page(&who)?;
    let data = JobsPage {
        jobs: jobs.iter().map(row).collect(),
    };
    Ok(page(
        StatusCode::OK,
        "jobs.html",
        Some(&Me::from(&who)),
        "jobs",
        &data,
    ))
}

#[derive(Debug, Serialize)]
struct JobPage {
    job: JobRow,
    spec: serde_json::Value,
    attempts: Vec<plinth_types::job::Attempt>,
    stdout: String,
    stderr: String,
    running: bool,
    /// The pod whose log is shown, and every pod of the gang (empty for a job of one pod).
    pod: u32,
    pods: Vec<u32>,
}

/// `?pod=N` on a gang job's page: whose log to show.
#[derive(Debug, serde::Deserialize)]
pub(super) struct PodQuery {
    pod: Option<u32>,
}

async fn tail(
    s: &AppState,
    who: &plinth_types::Identity,
    j: &Job,
    stream: LogStream,
    pod: u32,
) -> String {
    let Some(c) = &s.jobs else {
        return String::new();
    };
    // Read from the start, keep the last LOG_TAIL bytes (the executor caps logs per attempt).
    let mut offset = 0;
    let mut out: Vec<u8> = Vec::new();
    for _ in 0..32 {
        match c.logs(who, &j.name, stream, offset, None, pod).await {
            Ok((data, next, _)) => {
                if data.is_empty() {
                    break;
                }
                out.extend_from_slice(&data);
                if out.len() as u64 > LOG_TAIL {
                    let cut = out.len() - LOG_TAIL as usize;
                    out.drain(..cut);
                }
                offset = next;
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) async fn job_detail(
    State(s): State<AppState>,
    Session(who): Session,
    Path(name): Path<String>,
    Query(q): Query<PodQuery>,
) -> PageResult {
    let j = match &s.jobs {
        Some(c) => c.get(&who, &name).await,
        None => Err(unavailable()),
    }
    .or_page(&who)?;
    let nodes = j.spec.nodes.max(1);
    let pod = q.pod.unwrap_or(0).min(nodes - 1);
    let stdout = tail(&s, &who, &j, LogStream::Stdout, pod).await;
    let stderr = tail(&s, &who, &j, LogStream::Stderr, pod).await;
    let data = JobPage {
        job: row(&j),
        spec: serde_json::to_value(&j.spec).unwrap_or_default(),
        attempts: j.status.attempts.clone(),
        stdout,
        stderr,
        running: !j.status.state.is_terminal(),
        pod,
        pods: if nodes > 1 {
            (0..nodes).collect()
        } else {
            Vec::new()
        },
    };
    Ok(page(
        StatusCode::OK,
        "job.html",
        Some(&Me::from(&who)),
        "jobs",
        &data,
    ))
}

// ----- the queues page's chart: usage against quota -----

const LABEL_WIDTH: f64 = 150.0;
const VALUE_ROOM: f64 = 250.0;
const HEADER_HEIGHT: f64 = 12.0;
const ROW_HEIGHT: f64 = 32.0;
const BAR_HEIGHT: f64 = 18.0;
const MARK_OVERHANG: f64 = 4.0;

/// One queue's bar, summed over its pools.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct QueueBar {
    pub name: String,
    pub nominal: f64,
    pub used: f64,
    pub borrowed: f64,
    pub lent: f64,
}

/// Per visible queue: its nominal GPU quota (from its spec) and what its admitted jobs use,
/// borrow and lend (from the scheduler), summed over its pools.
pub(super) fn queue_bars(queues: &[QueueRow], usage: &[QueueUsage]) -> Vec<QueueBar> {
    queues
        .iter()
        .map(|q| {
            let mine = usage.iter().filter(|u| u.queue == q.meta.name);
            let (mut used, mut borrowed, mut lent) = (0.0, 0.0, 0.0);
            for u in mine {
                used += u.gpus;
                borrowed += u.borrowed;
                lent += u.lent;
            }
            QueueBar {
                name: q.meta.name.clone(),
                nominal: q.nominal_gpus,
                used,
                borrowed,
                lent,
            }
        })
        .collect()
}

/// Horizontal bars, one per queue, on one GPU scale: the part of its usage within its nominal
/// quota, the part borrowed from its cohort above it, and a mark at the quota. `None` when
/// there is no queue or no queue has a GPU quota or GPU usage.
pub(super) fn usage_chart(bars: &[QueueBar]) -> Option<Chart> {
    let max = bars
        .iter()
        .map(|b| b.nominal.max(b.used))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    if bars.is_empty() || max <= 0.0 {
        return None;
    }
    let room = FULL_WIDTH - LABEL_WIDTH - VALUE_ROOM;
    let x = |v: f64| LABEL_WIDTH + (v.clamp(0.0, max) / max * room * 10.0).round() / 10.0;
    let mut rects = Vec::new();
    let mut texts = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        let top = HEADER_HEIGHT + ROW_HEIGHT * i as f64 + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
        let text_y = top + BAR_HEIGHT / 2.0 + 4.5;
        let label: String = if b.name.chars().count() > 20 {
            b.name.chars().take(19).chain(['…']).collect()
        } else {
            b.name.clone()
        };
        texts.push(Text {
            x: LABEL_WIDTH - 12.0,
            y: text_y,
            anchor: "end",
            class: "chart-label",
            text: label,
        });
        rects.push(Rect {
            x: LABEL_WIDTH,
            y: top,
            w: room,
            h: BAR_HEIGHT,
            class: "chart-track",
            title: String::new(),
        });
        let within = (b.used - b.borrowed).max(0.0);
        if within > 0.0 {
            rects.push(Rect {
                x: LABEL_WIDTH,
                y: top,
                w: (x(within) - LABEL_WIDTH).max(3.0),
                h: BAR_HEIGHT,
                class: "bar-gpu",
                title: format!(
                    "{}: {} GPUs in use within its nominal quota of {}",
                    b.name,
                    fmt_num(within),
                    fmt_num(b.nominal)
                ),
            });
        }
        if b.borrowed > 0.0 {
            let start = x(within);
            rects.push(Rect {
                x: start,
                y: top,
                w: (x(b.used) - start).max(3.0),
                h: BAR_HEIGHT,
                class: "bar-borrowed",
                title: format!(
                    "{}: {} GPUs borrowed from its cohort above its nominal quota",
                    b.name,
                    fmt_num(b.borrowed)
                ),
            });
        }
        rects.push(Rect {
            x: x(b.nominal) - 1.0,
            y: top - MARK_OVERHANG,
            w: 2.0,
            h: BAR_HEIGHT + 2.0 * MARK_OVERHANG,
            class: "chart-quota-mark",
            title: format!("{}: nominal quota {} GPUs", b.name, fmt_num(b.nominal)),
        });
        let mut value = format!("{} of {} GPUs", fmt_num(b.used), fmt_num(b.nominal));
        if b.borrowed > 0.0 {
            value.push_str(&format!(", {} borrowed", fmt_num(b.borrowed)));
        }
        if b.lent > 0.0 {
            value.push_str(&format!(", {} lent", fmt_num(b.lent)));
        }
        texts.push(Text {
            x: LABEL_WIDTH + room + 10.0,
            y: text_y,
            anchor: "start",
            class: "chart-value",
            text: value,
        });
    }
    Some(Chart {
        id: "queue-usage-chart",
        title: "GPU usage against nominal quota per queue".into(),
        width: FULL_WIDTH,
        height: HEADER_HEIGHT + ROW_HEIGHT * bars.len() as f64 + 6.0,
        rects,
        texts,
        legend: vec![
            LegendItem {
                label: "in use within quota",
                class: "bar-gpu",
            },
            LegendItem {
                label: "borrowed from the cohort",
                class: "bar-borrowed",
            },
            LegendItem {
                label: "nominal quota",
                class: "chart-quota-mark",
            },
        ],
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn bar(name: &str, nominal: f64, used: f64, borrowed: f64) -> QueueBar {
        QueueBar {
            name: name.into(),
            nominal,
            used,
            borrowed,
            lent: 0.0,
        }
    }

    fn find<'a>(c: &'a Chart, class: &str, name: &str) -> Option<&'a Rect> {
        c.rects
            .iter()
            .find(|r| r.class == class && r.title.starts_with(&format!("{name}:")))
    }

    #[test]
    fn bars_split_usage_at_the_quota_and_share_one_scale() {
        // a: 8 nominal, 12 in use (4 borrowed); b: 8 nominal, 2 in use; c: idle, 4 nominal.
        let c = usage_chart(&[
            bar("a", 8.0, 12.0, 4.0),
            bar("b", 8.0, 2.0, 0.0),
            bar("c", 4.0, 0.0, 0.0),
        ])
        .unwrap();
        assert_eq!(c.id, "queue-usage-chart");
        let room = FULL_WIDTH - LABEL_WIDTH - VALUE_ROOM;
        // The scale's end is the largest of quotas and usage: 12 GPUs.
        let a_in = find(&c, "bar-gpu", "a").unwrap();
        let a_borrowed = find(&c, "bar-borrowed", "a").unwrap();
        let a_mark = find(&c, "chart-quota-mark", "a").unwrap();
        assert!((a_in.w - room * 8.0 / 12.0).abs() < 0.2, "{a_in:?}");
        // Borrowed starts where the quota ends and runs to the usage.
        assert!(
            (a_borrowed.x - (LABEL_WIDTH + a_in.w)).abs() < 0.2,
            "{a_borrowed:?}"
        );
        assert!((a_borrowed.x + a_borrowed.w - (LABEL_WIDTH + room)).abs() < 0.2);
        assert!((a_mark.x + 1.0 - a_borrowed.x).abs() < 0.2, "{a_mark:?}");
        let b_in = find(&c, "bar-gpu", "b").unwrap();
        assert!((b_in.w - room * 2.0 / 12.0).abs() < 0.2, "{b_in:?}");
        assert!(find(&c, "bar-borrowed", "b").is_none());
        let b_mark = find(&c, "chart-quota-mark", "b").unwrap();
        assert_eq!(b_mark.x, a_mark.x, "equal quotas, equal marks");
        // An idle queue has its track and quota mark and no usage bar.
        assert!(find(&c, "bar-gpu", "c").is_none());
        let c_mark = find(&c, "chart-quota-mark", "c").unwrap();
        assert!((c_mark.x + 1.0 - (LABEL_WIDTH + room * 4.0 / 12.0)).abs() < 0.2);
        let values: Vec<&str> = c
            .texts
            .iter()
            .filter(|t| t.class == "chart-value")
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(
            values,
            ["12 of 8 GPUs, 4 borrowed", "2 of 8 GPUs", "0 of 4 GPUs"]
        );
        // Rows go down the page.
        assert!(b_mark.y > a_mark.y && c_mark.y > b_mark.y);
    }

    #[test]
    fn no_chart_without_gpu_quota_or_usage() {
        assert!(usage_chart(&[]).is_none());
        assert!(usage_chart(&[bar("cpu-only", 0.0, 0.0, 0.0)]).is_none());
    }

    #[test]
    fn bars_sum_a_queues_pools_and_follow_the_visible_queues() {
        let q = super::super::views::queue_row(&super::super::views::tests::view(
            "Queue",
            "q1",
            Some("t"),
            serde_json::json!({"team": "t", "cohort": "c",
                "quotas": [{"pool": "p1", "gpus": 4}, {"pool": "p2", "gpus": 2}]}),
        ));
        let usage = vec![
            QueueUsage {
                queue: "q1".into(),
                pool: "p1".into(),
                gpus: 6.0,
                borrowed: 2.0,
                lent: 0.0,
                cpus: 1.0,
            },
            QueueUsage {
                queue: "q1".into(),
                pool: "p2".into(),
                gpus: 1.0,
                borrowed: 0.0,
                lent: 1.0,
                cpus: 0.0,
            },
            QueueUsage {
                queue: "hidden".into(),
                pool: "p1".into(),
                gpus: 3.0,
                borrowed: 0.0,
                lent: 0.0,
                cpus: 0.0,
            },
        ];
        let bars = queue_bars(&[q], &usage);
        assert_eq!(
            bars,
            vec![QueueBar {
                name: "q1".into(),
                nominal: 6.0,
                used: 7.0,
                borrowed: 2.0,
                lent: 1.0,
            }]
        );
        let admin = plinth_types::Identity {
            token_id: "abc123abc123".into(),
            name: "ops".into(),
            team: None,
            role: plinth_types::Role::Admin,
        };
        let html = super::super::render::render(
            "queues.html",
            Some(&Me::from(&admin)),
            "queues",
            &serde_json::json!({"queues": [], "usage": {}, "chart": usage_chart(&bars)}),
        )
        .unwrap();
        assert!(html.contains(r#"<svg id="queue-usage-chart""#), "{html}");
        assert!(html.contains(r#"class="bar-borrowed""#), "{html}");
        assert!(html.contains(r#"class="chart-quota-mark""#), "{html}");
        assert!(html.contains("7 of 6 GPUs, 2 borrowed, 1 lent"), "{html}");
        assert!(html.contains("borrowed from the cohort"), "{html}");
    }
}
