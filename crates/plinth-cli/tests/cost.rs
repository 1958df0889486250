//! Cost end to end: the real `plinth` binary and server, usage recorded by real job attempts
//! and ingested over the API, reports whose figures are computed by hand here, budgets crossing
//! thresholds (API, CLI, `/metrics`, console), approvals, quota vetoes at admission and the FOCUS
//! export.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};
use common::{
    ADMIN, Auth, PgDb, Server, bin, get_text, http, named_token, read_url, runtime, token, write,
};
use serde_json::{Value, json};

/// A GPU pool of one node with 2 GPUs at 3.00 per GPU-hour and 8 cores at 0.80 per node-hour
/// (0.10 per core-hour), and a CPU pool of one node with 4 cores at 0.40 per node-hour (0.10 per
/// core-hour); memory is free. Both are paid for since 2026-11-01 (`pricedSince`: the usage the
/// tests import predates the Pool objects). Teams ml and web.
const WORKSPACE: &str = r#"
apiVersion: plinth/v1
kind: Pool
metadata: {name: gpu}
spec: {nodes: 1, cpusPerNode: 8, memoryGibPerNode: 32, accelerator: {type: nvidia-l4, count: 2}, pricePerGpuHour: 3.0, pricePerNodeHour: 0.8, pricedSince: "2026-11-01T00:00:00Z"}
---
apiVersion: plinth/v1
kind: Pool
metadata: {name: cpu}
spec: {nodes: 1, cpusPerNode: 4, memoryGibPerNode: 8, pricePerNodeHour: 0.4, pricedSince: "2026-11-01T00:00:00Z"}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: ml}
---
apiVersion: plinth/v1
kind: Team
metadata: {name: web}
---
apiVersion: plinth/v1
kind: Queue
metadata: {name: ml-q}
spec: {team: ml, quotas: [{pool: gpu, gpus: 2}, {pool: cpu, gpus: 0, cpus: 4}]}
"#;

const EPS: f64 = 1e-9;

fn setup() -> Server {
    let s = Server::start();
    s.apply("cost.yaml", WORKSPACE);
    s
}

/// One usage record as `POST /api/v1/cost/usage` takes it.
#[allow(clippy::too_many_arguments)]
fn rec(
    id: &str,
    workload: (&str, &str, i64),
    pool: &str,
    start: &str,
    end: &str,
    request_gpus: f64,
    usage_gpus: f64,
    tags: Value,
) -> Value {
    json!({
        "source": "import", "id": id, "workload": workload.0, "workloadName": workload.1,
        "attempt": workload.2, "pool": pool, "procurement": "on_demand",
        "start": start, "end": end,
        "requestGpus": request_gpus, "requestCpus": 0.0, "requestMemoryGib": 0.0,
        "usageGpus": usage_gpus, "usageCpus": 0.0, "usageMemoryGib": 0.0,
        "tags": tags, "inferences": 0
    })
}

fn ingest(s: &Server, token: &str, records: &[Value]) -> (i32, String, String) {
    let f = write(
        &s.data_dir,
        &format!("usage-{}.json", uuid_like()),
        &json!({ "records": records }).to_string(),
    );
    s.cli(token, &["cost", "ingest", "-f", &f])
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn json_out(s: &Server, token: &str, args: &[&str]) -> Value {
    serde_json::from_str(&s.ok(token, args)).expect("json output")
}

/// `plinth cost report --by <by> --period <period> [extra…] -o json` as the admin.
fn report(s: &Server, by: &str, period: &str, extra: &[&str]) -> Value {
    let mut args = vec!["cost", "report", "--by", by, "--period", period];
    args.extend(extra);
    args.extend(["-o", "json"]);
    json_out(s, ADMIN, &args)
}

/// `plinth cost units --metric <metric> --period <period> -o json` as the admin.
fn units(s: &Server, metric: &str, period: &str) -> Value {
    json_out(
        s,
        ADMIN,
        &[
            "cost", "units", "--metric", metric, "--period", period, "-o", "json",
        ],
    )
}

/// Asserts November 2026's report allocates `want` in all.
fn assert_november_allocated(s: &Server, want: f64) {
    let r = json_out(
        s,
        ADMIN,
        &["cost", "report", "--period", "2026-11", "-o", "json"],
    );
    assert!(close(
        r["report"]["allocated_total"].as_f64().unwrap(),
        want
    ));
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < EPS * b.abs().max(1.0)
}

/// Rows of a report: group (joined with `/`) → (idle, cost, idle_share, total).
fn rows(r: &Value) -> Vec<(String, bool, f64, f64, f64)> {
    r["report"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let group: Vec<&str> = row["group"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_str().unwrap())
                .collect();
            (
                group.join("/"),
                row["idle"].as_bool().unwrap(),
                row["cost"].as_f64().unwrap(),
                row["idle_share"].as_f64().unwrap(),
                row["total"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn row<'a>(
    rows: &'a [(String, bool, f64, f64, f64)],
    group: &str,
    idle: bool,
) -> &'a (String, bool, f64, f64, f64) {
    rows.iter()
        .find(|r| r.0 == group && r.1 == idle)
        .unwrap_or_else(|| panic!("no row {group:?} (idle {idle}) in {rows:?}"))
}

/// Four records of November 2026, all on the GPU pool (3.00 per GPU-hour):
/// - train-a attempt 1: 1 GPU for 2 h on day 2 → 6.00 (team ml, model llama);
/// - train-a attempt 2 (the retry): 2 GPUs for 1 h on day 2 → 6.00;
/// - chat serving: 0.5 GPU requested, 1 GPU used, for 4 h on day 2 → max = 1 GPU → 12.00
///   (team web, model bert, 4,000 inferences);
/// - an untagged job: 1 GPU for 1 h on day 3 → 3.00.
fn november() -> Vec<Value> {
    let mut serving = rec(
        "chat/2026-11-02T10",
        ("serving", "chat", 0),
        "gpu",
        "2026-11-02T10:00:00Z",
        "2026-11-02T14:00:00Z",
        0.5,
        1.0,
        json!({"team": "web", "model": "bert"}),
    );
    serving["inferences"] = json!(4000);
    serving["modelVersion"] = json!("3");
    vec![
        rec(
            "train-a/1",
            ("job", "train-a", 1),
            "gpu",
            "2026-11-02T00:00:00Z",
            "2026-11-02T02:00:00Z",
            1.0,
            0.0,
            json!({"team": "ml", "model": "llama"}),
        ),
        rec(
            "train-a/2",
            ("job", "train-a", 2),
            "gpu",
            "2026-11-02T02:00:00Z",
            "2026-11-02T03:00:00Z",
            2.0,
            0.0,
            json!({"team": "ml", "model": "llama"}),
        ),
        serving,
        rec(
            "stray/1",
            ("job", "stray", 1),
            "gpu",
            "2026-11-03T00:00:00Z",
            "2026-11-03T01:00:00Z",
            1.0,
            0.0,
            json!({}),
        ),
    ]
}

#[test]
fn reports_allocate_idle_and_share_it_with_figures_computed_by_hand() {
    reports_by_hand(&setup());
}

/// The same figures from a server on PostgreSQL (a fresh database, dropped afterwards;
/// `PLINTH_SKIP_POSTGRES=1` skips it).
#[test]
fn reports_from_postgres_match_the_figures_computed_by_hand() {
    let Some(db) = PgDb::create("cost_e2e") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--database-url", &db.url]);
    s.apply("cost.yaml", WORKSPACE);
    reports_by_hand(&s);
    assert_eq!(s.terminate(), 0);
}

fn reports_by_hand(s: &Server) {
    let (code, out, err) = ingest(s, ADMIN, &november());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 stored, 0 already stored"), "{out}");

    // Day 2, idle apart. Allocated: 6 + 6 (ml) + 12 (web) = 24 (the records hold no CPU). GPU
    // pool paid: 2 GPUs × 3.00 × 24 h = 144 (120 idle) and 8 cores × 0.10 × 24 h = 19.20 (all
    // idle); CPU pool: 4 cores × 0.10 × 24 h = 9.60 idle, none used.
    let r = report(s, "team", "2026-11-02", &[]);
    let rs = rows(&r);
    assert!(close(row(&rs, "ml", false).2, 12.0), "{rs:?}");
    assert!(close(row(&rs, "web", false).2, 12.0), "{rs:?}");
    assert!(
        close(row(&rs, "(idle)", true).2, 120.0 + 19.2 + 9.6),
        "{rs:?}"
    );
    assert!(close(
        r["report"]["allocated_total"].as_f64().unwrap(),
        24.0
    ));
    assert!(close(r["report"]["idle_total"].as_f64().unwrap(), 148.8));
    assert!(close(r["report"]["total"].as_f64().unwrap(), 172.8));
    assert!(r["report"]["untagged_total"].as_f64().unwrap().abs() < EPS);

    // Idle shared: the GPU pool's 139.20 among ml and web in proportion to their cost (12 : 12);
    // the CPU pool's 9.60 had no user that day and stays apart.
    let r = report(s, "team", "2026-11-02", &["--share-idle"]);
    let rs = rows(&r);
    for team in ["ml", "web"] {
        let t = row(&rs, team, false);
        assert!(close(t.3, 69.6) && close(t.4, 81.6), "{team}: {t:?}");
    }
    assert!(close(row(&rs, "(idle)", true).2, 9.6), "{rs:?}");

    // The whole month by team and model: the untagged 3.00 is flagged with its record.
    let r = report(s, "team,model", "2026-11", &[]);
    let rs = rows(&r);
    assert!(close(row(&rs, "ml/llama", false).2, 12.0), "{rs:?}");
    assert!(close(row(&rs, "web/bert", false).2, 12.0), "{rs:?}");
    assert!(
        close(row(&rs, "(untagged)/(untagged)", false).2, 3.0),
        "{rs:?}"
    );
    assert!(close(r["report"]["untagged_total"].as_f64().unwrap(), 3.0));
    assert_eq!(r["untaggedRecords"], json!(["import/stray/1"]));
    // 30 days of both pools paid (30 × (144 + 19.20) + 30 × 9.60) less the 27 allocated.
    assert!(close(
        r["report"]["idle_total"].as_f64().unwrap(),
        30.0 * (144.0 + 19.2) + 30.0 * 9.6 - 27.0
    ));

    // CSV and the table carry the same figures.
    let csv = s.ok(
        ADMIN,
        &[
            "cost",
            "report",
            "--by",
            "team",
            "--period",
            "2026-11-02",
            "-o",
            "csv",
        ],
    );
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("team,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("ml,") && l.contains(",12")),
        "{csv}"
    );
    let table = s.ok(ADMIN, &["cost", "report", "--period", "2026-11-02"]);
    assert!(table.contains("allocated 24.00  idle 148.80"), "{table}");

    // Unit economics of day 2: the training run train-a is both its attempts (12.00); 1,000
    // inferences of chat v3 cost 12.00 / 4 = 3.00.
    let u = units(s, "training-run", "2026-11-02");
    let train = u["units"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == json!(["train-a"]))
        .expect("train-a row");
    assert!(close(train["cost"].as_f64().unwrap(), 12.0), "{train}");
    let u = units(s, "thousand-inferences", "2026-11-02");
    assert_eq!(u["units"]["rows"][0]["key"], json!(["chat", "3"]), "{u}");
    assert!(close(
        u["units"]["rows"][0]["unit_cost"].as_f64().unwrap(),
        3.0
    ));
}

#[test]
fn ingestion_is_idempotent_and_bad_input_is_refused_with_its_reason() {
    let s = setup();
    assert_eq!(ingest(&s, ADMIN, &november()).0, 0);
    // The same records again are counted once; the totals do not move.
    let (code, out, _) = ingest(&s, ADMIN, &november());
    assert_eq!(code, 0);
    assert!(out.contains("0 stored, 4 already stored"), "{out}");
    assert_november_allocated(&s, 27.0);

    let mut changed = november()[0].clone();
    changed["requestGpus"] = json!(4.0);
    let cases: Vec<(Value, i32, &str)> = vec![
        (changed, 6, "import/train-a/1"),
        (
            {
                let mut r = november()[0].clone();
                r["id"] = json!("neg");
                r["requestGpus"] = json!(-1.0);
                r
            },
            3,
            "requestGpus",
        ),
        (
            {
                let mut r = november()[0].clone();
                r["id"] = json!("backwards");
                r["end"] = json!("2026-11-01T00:00:00Z");
                r
            },
            3,
            "before it starts",
        ),
        (
            {
                let mut r = november()[0].clone();
                r["id"] = json!("when");
                r["start"] = json!("yesterday");
                r
            },
            3,
            "start",
        ),
        (
            {
                let mut r = november()[0].clone();
                r["source"] = json!("job");
                r
            },
            3,
            "job controller",
        ),
    ];
    for (record, want, needle) in cases {
        let (code, out, err) = ingest(&s, ADMIN, &[record]);
        assert_eq!(code, want, "{needle}: {out}{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // Nothing of the refused requests was stored.
    assert_november_allocated(&s, 27.0);
    // Only admins record usage.
    let member = token(&s, "ml", "member");
    let (code, _, err) = ingest(&s, &member, &november());
    assert_eq!(code, 4, "{err}");

    // Usage on a pool without a price is left out of the figures and named in a warning.
    s.apply(
        "free.yaml",
        "apiVersion: plinth/v1\nkind: Pool\nmetadata: {name: free}\nspec: {nodes: 1, cpusPerNode: 2, memoryGibPerNode: 4}\n",
    );
    let mut free = november()[0].clone();
    free["id"] = json!("free/1");
    free["pool"] = json!("free");
    assert_eq!(ingest(&s, ADMIN, &[free]).0, 0);
    let (code, out, err) = s.cli(ADMIN, &["cost", "report", "--period", "2026-11"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("allocated 27.00"), "{out}");
    assert!(
        err.contains("pool \"free\"") && err.contains("no price"),
        "{err}"
    );
    // Bad report arguments name the input.
    for (args, needle) in [
        (vec!["--by", "colour"], "colour"),
        (vec!["--period", "2026-13"], "2026-13"),
    ] {
        let mut a = vec!["cost", "report"];
        a.extend(args);
        let (code, _, err) = s.cli(ADMIN, &a);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

/// Usage of `gpus` GPUs on the GPU pool for team ml over the last minutes of this month (at
/// most 30, never before the month started); returns its cost (3.00 per GPU-hour).
fn recent_usage(s: &Server, id: &str, gpus: f64, env: Option<&str>) -> f64 {
    let now = Utc::now();
    let month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .unwrap();
    if now - month < chrono::Duration::seconds(10) {
        std::thread::sleep(Duration::from_secs(10));
    }
    let now = Utc::now();
    let end: DateTime<Utc> = now - chrono::Duration::seconds(2);
    let start = (end - chrono::Duration::minutes(30)).max(month);
    let t = |x: DateTime<Utc>| x.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut tags = json!({"team": "ml", "model": "llama"});
    if let Some(e) = env {
        tags["env"] = json!(e);
    }
    let r = rec(
        id,
        ("job", id, 1),
        "gpu",
        &t(start),
        &t(end),
        gpus,
        0.0,
        tags,
    );
    let (code, out, err) = ingest(s, ADMIN, &[r]);
    assert_eq!(code, 0, "{out}{err}");
    let hours = (end - start).num_milliseconds() as f64 / 3_600_000.0;
    gpus * 3.0 * hours
}

#[test]
fn a_budget_crosses_its_first_threshold_in_the_api_cli_metrics_and_console() {
    let s = setup();
    let spent = recent_usage(&s, "burn", 2.0, None);
    // The notify threshold's webhook: a listener of this test.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/budget-hook", hook.local_addr().unwrap());
    // Amount 1.5 × spend: the 50% notify threshold is crossed, the 100% one is not.
    let amount = spent * 1.5;
    s.apply(
        "budget.yaml",
        &format!(
            "apiVersion: plinth/v1\nkind: Budget\nmetadata: {{name: ml-month}}\nspec: {{scope: {{team: ml}}, period: month, amount: {amount}, currency: USD, webhook: \"{hook_url}\", thresholds: [{{percent: 50, action: notify}}, {{percent: 100, action: block_non_production}}]}}\n"
        ),
    );
    // Another team's budget sees none of ml's spend.
    s.apply(
        "web-budget.yaml",
        "apiVersion: plinth/v1\nkind: Budget\nmetadata: {name: web-month}\nspec: {scope: {team: web}, period: month, amount: 100, thresholds: [{percent: 50, action: notify}]}\n",
    );
    let views = json_out(&s, ADMIN, &["cost", "budgets", "-o", "json"]);
    let ml = views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ml-month")
        .unwrap();
    let st = &ml["status"];
    assert!(close(st["spent"].as_f64().unwrap(), spent), "{st}");
    assert!(
        close(st["percent_used"].as_f64().unwrap(), 100.0 / 1.5),
        "{st}"
    );
    assert_eq!(st["thresholds"][0]["crossed"], true, "{st}");
    assert_eq!(st["thresholds"][1]["crossed"], false, "{st}");
    assert!(
        st["warnings"][0]
            .as_str()
            .unwrap()
            .contains("50% threshold"),
        "{st}"
    );
    let web = views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web-month")
        .unwrap();
    assert!(
        web["status"]["spent"].as_f64().unwrap().abs() < EPS,
        "{web}"
    );

    // The crossing was POSTed to the webhook once, with the figures.
    let body = receive_post(&hook);
    assert!(body.starts_with("POST /budget-hook HTTP/1.1"), "{body}");
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["budget"], "ml-month", "{json}");
    assert_eq!(json["percent"], 50.0, "{json}");
    assert!(close(json["spent"].as_f64().unwrap(), spent), "{json}");

    // `plinth get budgets` shows use and the crossed threshold.
    let table = s.ok(ADMIN, &["get", "budgets"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("ml-month"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("66.7%") && line.contains("50%"), "{table}");
    let detail = s.ok(ADMIN, &["describe", "budget", "ml-month"]);
    assert!(
        detail.contains("crossed") && detail.contains("not reached"),
        "{detail}"
    );

    // /metrics: the budget's use and ml's spend this month.
    let metrics = get_text(&s, "/metrics", Auth::None);
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(close(
        value("plinth_budget_used_ratio{budget=\"ml-month\"}"),
        1.0 / 1.5
    ));
    assert!(close(
        value("plinth_cost_month_to_date{team=\"ml\"}"),
        spent
    ));
    assert!(close(
        value("plinth_budget_thresholds_crossed{budget=\"ml-month\"}"),
        1.0
    ));

    // The console's cost page lists it as crossed and draws the burn chart.
    let page = get_text(&s, "/console/cost", Auth::Session(ADMIN));
    assert!(
        page.contains("id=\"budget-ml-month\"")
            && page.contains("data-name=\"ml-month\" data-status=\"crossed\""),
        "{page}"
    );
    assert!(page.contains("id=\"cost-budget-chart\""), "{page}");
    assert!(page.contains("id=\"cost-team-chart\""), "{page}");

    // A bad budget is refused at apply with the field named.
    let f = write(
        &s.data_dir,
        "bad-budget.yaml",
        "apiVersion: plinth/v1\nkind: Budget\nmetadata: {name: bad}\nspec: {period: month, amount: -5, thresholds: [{percent: 50, action: notify}]}\n",
    );
    let (code, _, err) = s.cli(ADMIN, &["apply", "-f", &f]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("spec.amount") && err.contains("-5"), "{err}");
}

/// Accepts one HTTP request on `listener` (waiting up to a minute), answers 200 and returns the
/// request's text.
fn receive_post(listener: &std::net::TcpListener) -> String {
    use std::io::{Read, Write};
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no webhook request came");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head, then the body its Content-Length announces.
    loop {
        let n = conn.read(&mut buf).unwrap();
        text.extend_from_slice(&buf[..n]);
        let t = String::from_utf8_lossy(&text).to_string();
        if let Some((head, body)) = t.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
        assert!(n > 0, "connection closed early: {t}");
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    String::from_utf8_lossy(&text).to_string()
}

fn job(s: &Server, tok: &str, name: &str) -> Value {
    json_out(s, tok, &["job", "describe", name, "-o", "json"])
}

fn wait_for(s: &Server, tok: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = job(s, tok, name);
        if ok(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {name} never {what}: {j:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `plinth job submit --team ml --queue ml-q --name <name> [flags…] -- <cmd…>` as `tok`.
fn submit_cli(
    s: &Server,
    tok: &str,
    name: &str,
    flags: &[&str],
    cmd: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "job", "submit", "--team", "ml", "--queue", "ml-q", "--name", name,
    ];
    args.extend(flags);
    args.push("--");
    args.extend(cmd);
    s.cli(tok, &args)
}

/// Like `submit_cli` but asserts the submission succeeded.
fn submit(s: &Server, tok: &str, name: &str, flags: &[&str], cmd: &[&str]) {
    let (code, out, err) = submit_cli(s, tok, name, flags, cmd);
    assert_eq!(
        code, 0,
        "submit {name} failed\nstdout: {out}\nstderr: {err}"
    );
}

fn wait_succeeded(s: &Server, tok: &str, name: &str) -> Value {
    wait_for(s, tok, name, "succeeded", |j| {
        j["status"]["state"] == "succeeded"
    })
}

#[test]
fn jobs_over_a_budget_estimate_wait_for_another_maintainers_approval() {
    let s = setup();
    recent_usage(&s, "earlier", 1.0, None);
    // Any ml spend crosses 0.0001% → new ml jobs estimated above 1.00 need approval.
    s.apply(
        "approve.yaml",
        "apiVersion: plinth/v1\nkind: Budget\nmetadata: {name: ml-approve}\nspec: {scope: {team: ml}, period: month, amount: 1000000, approvalOver: 1.0, thresholds: [{percent: 0.0001, action: require_approval}]}\n",
    );
    let submitter = token(&s, "ml", "maintainer");
    let member = token(&s, "ml", "member");
    // 1 GPU × 2 h × 3.00 = 6.00 > 1.00: held.
    submit(
        &s,
        &submitter,
        "big",
        &["--gpus", "1", "--max-runtime", "2h"],
        &["true"],
    );
    let j = job(&s, &submitter, "big");
    assert_eq!(j["status"]["state"], "pending_approval", "{j:#}");
    let why = j["status"]["waitReason"].as_str().unwrap_or_default();
    assert!(
        why.contains("estimate 6.00 USD") && why.contains("ml-approve"),
        "{why}"
    );
    // 1 GPU × 0.25 h × 3.00 = 0.75 ≤ 1.00: queued at once.
    submit(
        &s,
        &submitter,
        "small",
        &["--gpus", "1", "--max-runtime", "15m"],
        &["true"],
    );
    assert_ne!(
        job(&s, &submitter, "small")["status"]["state"],
        "pending_approval"
    );

    // Neither the submitter nor a member may approve; another maintainer may.
    let (code, _, err) = s.cli(&submitter, &["job", "approve", "big"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("submitted this job"), "{err}");
    let (code, _, err) = s.cli(&member, &["job", "approve", "big"]);
    assert_eq!(code, 4, "{err}");
    let approver = named_token(&s, "ml", "maintainer", "approver");
    s.ok(&approver, &["job", "approve", "big"]);
    let j = wait_succeeded(&s, &submitter, "big");
    assert!(j["status"]["message"].as_str().is_some(), "{j:#}");
    // Approving again is a conflict; the approval is audited with the approver.
    let (code, _, _) = s.cli(&approver, &["job", "approve", "big"]);
    assert_eq!(code, 6);
    let audit = json_out(
        &s,
        ADMIN,
        &["audit", "log", "--action", "job.approve", "-o", "json"],
    );
    let events = audit.as_array().unwrap();
    assert_eq!(events.len(), 1, "{audit:#}");
    assert_eq!(events[0]["name"], "big");
    assert!(
        events[0]["actor"].as_str().unwrap().contains("(approver)"),
        "{audit:#}"
    );
}

#[test]
fn quotas_veto_admission_and_a_spent_budget_blocks_non_production_work() {
    let s = setup();
    // ml has used 2 GPUs × 0.5 h = 1 GPU-hour this month; its quota is 1 GPU-hour.
    recent_usage(&s, "used", 2.0, None);
    s.apply(
        "quota.yaml",
        "apiVersion: plinth/v1\nkind: GpuQuota\nmetadata: {name: ml-gpu}\nspec: {team: ml, gpuHoursPerMonth: 1.0}\n",
    );
    let m = token(&s, "ml", "member");
    submit(
        &s,
        &m,
        "over",
        &["--gpus", "1", "--max-runtime", "10m"],
        &["true"],
    );
    let j = wait_for(&s, &m, "over", "showed the quota veto", |j| {
        j["status"]["waitReason"]
            .as_str()
            .is_some_and(|w| w.contains("GPU-hours"))
    });
    assert_eq!(j["status"]["state"], "pending", "{j:#}");
    assert!(
        j["status"]["waitReason"]
            .as_str()
            .unwrap()
            .contains("team ml has used"),
        "{j:#}"
    );
    // A CPU job is not held by a GPU quota.
    submit(&s, &m, "cpu-only", &[], &["true"]);
    wait_succeeded(&s, &m, "cpu-only");
    // Raising the quota lets the job in.
    s.apply(
        "quota.yaml",
        "apiVersion: plinth/v1\nkind: GpuQuota\nmetadata: {name: ml-gpu}\nspec: {team: ml, gpuHoursPerMonth: 100.0}\n",
    );
    wait_succeeded(&s, &m, "over");

    // A budget past its block_non_production threshold refuses non-production work.
    s.apply(
        "block.yaml",
        "apiVersion: plinth/v1\nkind: Budget\nmetadata: {name: ml-cap}\nspec: {scope: {team: ml}, period: month, amount: 0.01, thresholds: [{percent: 100, action: block_non_production}]}\n",
    );
    let (code, _, err) = submit_cli(&s, &m, "dev", &[], &["true"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("blocks non-production work"), "{err}");
    submit(&s, &m, "prod", &["--tag", "env=production"], &["true"]);
}

#[test]
fn job_attempts_are_recorded_and_exported_as_focus_across_a_restart() {
    let s = setup();
    let m = token(&s, "ml", "member");
    // The first attempt fails, the retry succeeds: both attempts count towards the job.
    let marker = s.data_dir.join("marker");
    let script = format!(
        "test -f {0} || {{ touch {0}; sleep 1; exit 1; }}; sleep 1",
        marker.display()
    );
    submit(
        &s,
        &m,
        "retry",
        &["--cpus", "2", "--max-retries", "1", "--tag", "model=llama"],
        &["sh", "-c", &script],
    );
    wait_succeeded(&s, &m, "retry");
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let export = loop {
        let f = s.data_dir.join("focus.csv");
        s.ok(
            ADMIN,
            &[
                "cost",
                "export",
                "--focus",
                "--period",
                &today,
                "-o",
                f.to_str().unwrap(),
            ],
        );
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains("job/retry/attempt/2") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        export.contains("job/retry/attempt/1") && export.contains("job/retry/attempt/2"),
        "{export}"
    );
    // Each attempt held 2 cores at 0.10 per core-hour for its wall time: the job's cost per
    // training run is both attempts' CPU rows summed.
    let mut reader = csv_rows(&export);
    let header = reader.remove(0);
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let job_cost: f64 = reader
        .iter()
        .filter(|r| r[col("ResourceName")] == "retry")
        .map(|r| r[col("EffectiveCost")].parse::<f64>().unwrap())
        .sum();
    assert!(job_cost > 0.0, "{export}");
    let u = units(&s, "training-run", &today);
    let unit = u["units"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == json!(["retry"]))
        .unwrap_or_else(|| panic!("{u:#}"));
    assert!(
        (unit["cost"].as_f64().unwrap() - job_cost).abs() < 1e-6,
        "{unit} vs {job_cost}"
    );

    // Killed and restarted: the usage is still there, once.
    let dir = s.data_dir.clone();
    let mut s = s;
    let _ = s.child.kill();
    let _ = s.child.wait();
    let s2 = Server::start_in(&dir, &[]);
    let r = report(&s2, "team,model", &today, &[]);
    let rs = rows(&r);
    let ml = row(&rs, "ml/llama", false);
    assert!((ml.2 - job_cost).abs() < 1e-6, "{rs:?} vs {job_cost}");
    drop(s);
}

/// A tiny CSV reader for the export (quoted cells with commas and doubled quotes).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cells = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => cells.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        cells.push(cur);
        out.push(cells);
    }
    out
}

#[test]
fn a_pool_created_now_has_no_idle_before_its_creation() {
    let s = Server::start();
    let before = Utc::now();
    // 1 node of 2 GPUs at 3.00 and 8 cores at 0.10 per core-hour: 6.80 an hour paid for.
    s.apply(
        "pool.yaml",
        "apiVersion: plinth/v1\nkind: Pool\nmetadata: {name: fresh}\nspec: {nodes: 1, cpusPerNode: 8, memoryGibPerNode: 32, accelerator: {type: nvidia-l4, count: 2}, pricePerGpuHour: 3.0, pricePerNodeHour: 0.8}\n",
    );
    // Yesterday the pool did not exist: no idle at all.
    let yesterday = (before - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let r = report(&s, "team", &yesterday, &[]);
    assert_eq!(r["report"]["idle_total"].as_f64().unwrap(), 0.0, "{r}");
    assert!(r["report"]["rows"].as_array().unwrap().is_empty(), "{r}");
    // Month to date: idle since the pool was created only, at most 6.80 × the hours since
    // `before` (a month of it would be thousands).
    let r = json_out(&s, ADMIN, &["cost", "report", "-o", "json"]);
    let idle = r["report"]["idle_total"].as_f64().unwrap();
    let hours = (Utc::now() - before).num_milliseconds() as f64 / 3_600_000.0;
    assert!(
        idle > 0.0 && idle <= 6.8 * hours + EPS,
        "{idle} vs {hours} h"
    );
    // A pricedSince that is not a time is refused at apply with the field named.
    let f = write(
        &s.data_dir,
        "bad-pool.yaml",
        "apiVersion: plinth/v1\nkind: Pool\nmetadata: {name: bad}\nspec: {nodes: 1, cpusPerNode: 8, memoryGibPerNode: 32, pricePerNodeHour: 0.8, pricedSince: last-week}\n",
    );
    let (code, _, err) = s.cli(ADMIN, &["apply", "-f", &f]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("spec.pricedSince") && err.contains("\"last-week\" is not an RFC 3339 time"),
        "{err}"
    );
}

/// A child process of the test, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A demo model server (`plinth demo-model-server`): answers a chat with "hello from NAME",
/// 3 tokens out, and counts the words of the messages as tokens in.
fn demo_model(name: &str) -> (String, Proc) {
    let mut child = Command::new(bin())
        .args([
            "demo-model-server",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
        ])
        .env("PLINTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plinth demo-model-server");
    let url = read_url(&mut child);
    (url, Proc(child))
}

/// Sends `n` chat requests of three words ("say hello please") for `model` as `key`; asserts
/// each is answered 200.
fn chats(gateway: &str, key: &str, model: &str, n: usize) {
    runtime().block_on(async {
        let client = reqwest::Client::new();
        for _ in 0..n {
            let r = client
                .post(format!("{gateway}/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": model,
                    "messages": [{"role": "user", "content": "say hello please"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    });
}

/// Polls `f` every 200 ms for up to 30 s until it returns `Some`.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn gateway_requests_are_priced_per_token_in_reports_units_budgets_and_focus() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--gateway-listen", "127.0.0.1:0"]);
    s.apply("cost.yaml", WORKSPACE);
    let (status, gw) = common::http_json(&s, "GET", "/api/v1/gateway", Auth::Bearer(ADMIN), None);
    assert_eq!(status, 200, "{gw}");
    let gateway = gw["url"].as_str().unwrap().to_string();
    let (model, _model_proc) = demo_model("v1");
    // 2.00 per 1,000 tokens in, 4.00 per 1,000 out: "say hello please" (3 tokens) answered
    // "hello from v1" (3 tokens) costs (3 × 2 + 3 × 4) / 1000 = 0.018, so 18.00 per 1,000
    // requests. A second deployment prices in EUR.
    s.apply(
        "chat.yaml",
        &format!(
            "apiVersion: plinth/v1\nkind: Deployment\nmetadata: {{name: chat}}\nspec:\n  team: web\n  models: [demo-chat]\n  versions:\n    - {{name: v1, role: stable, weight: 100, upstreams: [\"{model}\"]}}\n  pricing: {{inputPer1kTokens: 2.0, outputPer1kTokens: 4.0, currency: USD}}\n---\napiVersion: plinth/v1\nkind: Deployment\nmetadata: {{name: chat-eur}}\nspec:\n  team: web\n  models: [demo-eur]\n  versions:\n    - {{name: v1, role: stable, weight: 100, upstreams: [\"{model}\"]}}\n  pricing: {{inputPer1kTokens: 2.0, outputPer1kTokens: 4.0, currency: EUR}}\n"
        ),
    );
    let web = token(&s, "web", "member");
    // Until the gateway has read the Deployments (within a second) requests get 404.
    eventually("the deployments in the gateway", || {
        let (code, _) = common::http_json(
            &s,
            "GET",
            "/api/v1/deployments/chat-eur/status",
            Auth::Bearer(ADMIN),
            None,
        );
        (code == 200).then_some(())
    });
    chats(&gateway, &web, "demo-chat", 50);
    chats(&gateway, &web, "demo-eur", 10);

    // 50 requests × 0.018 = 0.90: 18.00 per 1,000 for chat v1 this month.
    let u = eventually("the requests in the unit costs", || {
        let u = json_out(
            &s,
            ADMIN,
            &[
                "cost",
                "units",
                "--metric",
                "thousand-inferences",
                "-o",
                "json",
            ],
        );
        let row = u["units"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == json!(["chat", "v1"]))
            .cloned()?;
        let all_eur = u["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .any(|w| w.starts_with("10 usage record(s)"));
        (row["units"].as_f64().unwrap() >= 0.05 - EPS && all_eur).then_some((u, row))
    });
    let (u, chat) = u;
    assert!(close(chat["cost"].as_f64().unwrap(), 0.9), "{chat}");
    assert!(close(chat["units"].as_f64().unwrap(), 0.05), "{chat}");
    assert!(close(chat["unit_cost"].as_f64().unwrap(), 18.0), "{chat}");
    // The EUR requests are left out with a warning, never added to USD.
    assert!(
        u["units"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["key"][0] != "chat-eur"),
        "{u}"
    );
    let warning = u["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|w| w.contains("EUR"))
        .unwrap_or_else(|| panic!("no EUR warning in {u}"));
    assert!(
        warning.starts_with("10 usage record(s) with a direct cost of 0.18 EUR are left out")
            && warning.contains("EUR is not converted"),
        "{warning}"
    );
    let table = s.ok(ADMIN, &["cost", "units", "--metric", "thousand-inferences"]);
    assert!(table.contains("chat") && table.contains("18.00"), "{table}");
    // The console's cost page has the same figure in its unit-cost table and chart.
    let page = get_text(&s, "/console/cost", Auth::Session(ADMIN));
    assert!(page.contains("id=\"units-inferences\""), "{page}");
    assert!(
        // (The template escapes "/" in attributes.)
        page.contains("data-key=\"chat &#x2f; v1\" data-unit-cost=\"18.00\""),
        "{page}"
    );
    assert!(page.contains("id=\"cost-unit-chart\""), "{page}");
    assert!(!page.contains("data-key=\"chat-eur"), "{page}");

    // The report: team web spent 0.90 on model demo-chat (the model the requests asked for).
    let r = json_out(
        &s,
        ADMIN,
        &["cost", "report", "--by", "team,model", "-o", "json"],
    );
    let rs = rows(&r);
    assert!(close(row(&rs, "web/demo-chat", false).2, 0.9), "{rs:?}");
    assert!(close(r["report"]["allocated_total"].as_f64().unwrap(), 0.9));

    // A budget of 1.00 for web: 90 % spent, its 50 % threshold crossed.
    s.apply(
        "web-budget.yaml",
        "apiVersion: plinth/v1\nkind: Budget\nmetadata: {name: web-day}\nspec: {scope: {team: web}, period: month, amount: 1.0, thresholds: [{percent: 50, action: notify}]}\n",
    );
    let views = json_out(&s, ADMIN, &["cost", "budgets", "-o", "json"]);
    let st = &views[0]["status"];
    assert!(close(st["spent"].as_f64().unwrap(), 0.9), "{st}");
    assert_eq!(st["thresholds"][0]["crossed"], true, "{st}");

    // FOCUS: the requests are Usage rows of the deployment with the requests as quantity.
    let f = s.data_dir.join("focus.csv");
    s.ok(
        ADMIN,
        &["cost", "export", "--focus", "-o", f.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&f).unwrap();
    let mut table = csv_rows(&text);
    let header = table.remove(0);
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let chat_rows: Vec<&Vec<String>> = table
        .iter()
        .filter(|r| r[col("ResourceId")] == "deployment/chat")
        .collect();
    assert!(!chat_rows.is_empty(), "{text}");
    let sum = |c: &str| -> f64 {
        chat_rows
            .iter()
            .map(|r| r[col(c)].parse::<f64>().unwrap())
            .sum()
    };
    assert!(close(sum("EffectiveCost"), 0.9), "{text}");
    assert!(close(sum("BilledCost"), 0.9), "{text}");
    assert!(close(sum("ConsumedQuantity"), 50.0), "{text}");
    for r in &chat_rows {
        assert_eq!(r[col("ChargeCategory")], "Usage");
        assert_eq!(r[col("ServiceName")], "Plinth Inference");
        assert_eq!(r[col("ConsumedUnit")], "Requests");
        assert_eq!(r[col("SubAccountId")], "web");
        // 0.018 a request.
        assert!(close(r[col("ContractedUnitPrice")].parse().unwrap(), 0.018));
    }
}

/// The November records of `november()`, plus budgets for ml, web and all spend.
fn team_workspace() -> Server {
    let s = setup();
    let (code, out, err) = ingest(&s, ADMIN, &november());
    assert_eq!(code, 0, "{out}{err}");
    s.apply(
        "budgets.yaml",
        "apiVersion: plinth/v1\nkind: Budget\nmetadata: {name: ml-b}\nspec: {scope: {team: ml}, period: month, amount: 100, thresholds: [{percent: 50, action: notify}]}\n---\napiVersion: plinth/v1\nkind: Budget\nmetadata: {name: web-b}\nspec: {scope: {team: web}, period: month, amount: 100, thresholds: [{percent: 50, action: notify}]}\n---\napiVersion: plinth/v1\nkind: Budget\nmetadata: {name: all-b}\nspec: {period: month, amount: 1000, thresholds: [{percent: 50, action: notify}]}\n",
    );
    s
}

#[test]
fn a_team_token_sees_only_its_teams_spend_and_an_admin_sees_all() {
    let s = team_workspace();
    let ml = token(&s, "ml", "viewer");
    let as_ml = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        json_out(&s, &ml, &a)
    };

    // Day 2 (see `reports_by_hand`): ml 12.00, web 12.00, idle 148.80. ml sees its 12.00 only:
    // no web row, no idle row, no untagged spend.
    let r = as_ml(&["cost", "report", "--by", "team", "--period", "2026-11-02"]);
    let rs = rows(&r);
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert!(close(row(&rs, "ml", false).2, 12.0), "{rs:?}");
    assert!(close(
        r["report"]["allocated_total"].as_f64().unwrap(),
        12.0
    ));
    assert!(r["report"]["idle_total"].as_f64().unwrap().abs() < EPS);
    // Shared idle: ml's share is what it is among all users (69.60, as for the admin).
    let r = as_ml(&[
        "cost",
        "report",
        "--by",
        "team",
        "--period",
        "2026-11-02",
        "--share-idle",
    ]);
    let t = row(&rows(&r), "ml", false).clone();
    assert!(close(t.3, 69.6) && close(t.4, 81.6), "{t:?}");
    assert!(close(r["report"]["total"].as_f64().unwrap(), 81.6));
    // The month: the untagged 3.00 is no team's to see.
    let r = as_ml(&["cost", "report", "--by", "team", "--period", "2026-11"]);
    assert_eq!(r["untaggedRecords"], json!([]), "{r}");
    assert!(close(
        r["report"]["allocated_total"].as_f64().unwrap(),
        12.0
    ));
    // The admin sees everything.
    let r = report(&s, "team", "2026-11", &[]);
    assert!(close(
        r["report"]["allocated_total"].as_f64().unwrap(),
        27.0
    ));
    assert_eq!(r["untaggedRecords"], json!(["import/stray/1"]));

    // Unit costs: ml's training run; web's serving is not ml's.
    let u = as_ml(&[
        "cost",
        "units",
        "--metric",
        "training-run",
        "--period",
        "2026-11-02",
    ]);
    assert_eq!(u["units"]["rows"].as_array().unwrap().len(), 1, "{u}");
    assert_eq!(u["units"]["rows"][0]["key"], json!(["train-a"]));
    let u = as_ml(&[
        "cost",
        "units",
        "--metric",
        "thousand-inferences",
        "--period",
        "2026-11-02",
    ]);
    assert!(u["units"]["rows"].as_array().unwrap().is_empty(), "{u}");
    let u = units(&s, "thousand-inferences", "2026-11-02");
    assert_eq!(u["units"]["rows"].as_array().unwrap().len(), 1, "{u}");

    // Budgets: ml sees its own only.
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&as_ml(&["cost", "budgets"])), ["ml-b"]);
    assert_eq!(
        names(&json_out(&s, ADMIN, &["cost", "budgets", "-o", "json"])),
        ["all-b", "ml-b", "web-b"]
    );

    // The FOCUS export: ml's rows only, no idle or purchase rows of the pools.
    let (status, text) = http(
        &s,
        "GET",
        "/api/v1/cost/export?period=2026-11",
        Auth::Bearer(&ml),
        None,
    );
    assert_eq!(status, 200, "{text}");
    let mut table = csv_rows(&text);
    let header = table.remove(0);
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    assert!(!table.is_empty(), "{text}");
    for r in &table {
        assert_eq!(r[col("SubAccountId")], "ml", "{text}");
        assert_eq!(r[col("ResourceName")], "train-a", "{text}");
    }
    let effective: f64 = table
        .iter()
        .map(|r| r[col("EffectiveCost")].parse::<f64>().unwrap())
        .sum();
    assert!(close(effective, 12.0), "{effective}");

    // The console's cost page: ml's budget, not web's; ml's team in the chart, not web's.
    let page = get_text(&s, "/console/cost?period=2026-11", Auth::Session(&ml));
    assert!(page.contains("id=\"budget-ml-b\""), "{page}");
    assert!(!page.contains("id=\"budget-web-b\"") && !page.contains("id=\"budget-all-b\""));
    assert!(!page.contains(">web<"), "{page}");
    let page = get_text(&s, "/console/cost?period=2026-11", Auth::Session(ADMIN));
    assert!(page.contains("id=\"budget-web-b\"") && page.contains("id=\"budget-all-b\""));
}

#[test]
fn the_focus_export_is_streamed_chunked_and_written_as_it_arrives() {
    let s = team_workspace();
    // The API answers in chunks (no Content-Length), CSV.
    let url = format!("{}/api/v1/cost/export?period=2026-11&focus=1.2", s.url);
    let (headers, body) = runtime().block_on(async {
        let r = reqwest::Client::new()
            .get(&url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let h = r.headers().clone();
        (h, r.bytes().await.unwrap())
    });
    assert_eq!(
        headers
            .get("transfer-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("chunked"),
        "{headers:?}"
    );
    assert!(headers.get("content-length").is_none(), "{headers:?}");
    assert!(body.starts_with(b"AvailabilityZone,BilledCost,"));
    // The CLI writes the same bytes (to a file, and to stdout with -o -).
    let f = s.data_dir.join("streamed.csv");
    s.ok(
        ADMIN,
        &[
            "cost",
            "export",
            "--focus",
            "--focus-version",
            "1.2",
            "--period",
            "2026-11",
            "-o",
            f.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&f).unwrap(), body.to_vec());
    assert!(!s.data_dir.join("streamed.csv.part").exists());
    let out = s.ok(
        ADMIN,
        &[
            "cost",
            "export",
            "--focus",
            "--focus-version",
            "1.2",
            "--period",
            "2026-11",
            "-o",
            "-",
        ],
    );
    assert_eq!(out.as_bytes(), &body[..]);
    // A bad request is still answered as an error before any byte of the file.
    let (code, _, err) = s.cli(
        ADMIN,
        &[
            "cost",
            "export",
            "--focus",
            "--focus-version",
            "9.9",
            "-o",
            f.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("\"9.9\" is not supported"), "{err}");
    assert!(!s.data_dir.join("streamed.csv.part").exists());
}

#[test]
fn a_webhook_ca_file_that_cannot_be_used_stops_the_start_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write(tmp.path(), "ca.pem", "not a certificate\n");
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--cost-webhook-ca-file", &bad])
        .env("PLINTH_BOOTSTRAP_TOKEN", ADMIN)
        .env("PLINTH_LOG", "warn")
        .env_remove("PLINTH_DATABASE_URL")
        .env_remove("PLINTH_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("webhook CA file {bad}")) && err.contains("no PEM certificate"),
        "{err}"
    );
    // An approval threshold that is not an amount names its source.
    let out = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("PLINTH_COST_APPROVAL_THRESHOLD", "lots")
        .env("PLINTH_BOOTSTRAP_TOKEN", ADMIN)
        .env_remove("PLINTH_DATABASE_URL")
        .env_remove("PLINTH_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PLINTH_COST_APPROVAL_THRESHOLD: \"lots\" is not an amount"),
        "{err}"
    );
}
