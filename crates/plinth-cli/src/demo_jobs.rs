//! `plinth up`'s spot demo: a spot pool, a queue on it, and a checkpointing job that is
//! interrupted once (as a cloud would reclaim the node) and resumes from its checkpoint.

use std::path::Path;
use std::time::Duration;

use plinth_types::api::{ApplyRequest, SourcedDocument};
use serde_json::{Value, json};

use crate::Conn;
use crate::client::Client;

const POOL: &str = "local-spot";
const QUEUE: &str = "research-spot";
const JOB: &str = "spot-demo";
/// The step after which the demo takes the node away.
const INTERRUPT_AT: u32 = 3;
const STEPS: u32 = 10;

/// The job's command: counts to `STEPS`, one step a second, saving the step in its checkpoint
/// directory; a later attempt starts from the saved step.
fn script() -> String {
    format!(
        r#"f="$PLINTH_CHECKPOINT_DIR/step"; step=$(cat "$f" 2>/dev/null || echo 0)
[ "$step" -gt 0 ] && echo "attempt $PLINTH_ATTEMPT resumed from step $step"
while [ "$step" -lt {STEPS} ]; do step=$((step + 1)); sleep 1; echo "$step" > "$f.tmp" && mv "$f.tmp" "$f"; echo "step $step"; done
echo "finished {STEPS} steps""#
    )
}

fn documents() -> Vec<SourcedDocument> {
    let labels = json!({"source": "plinth-up"});
    let pool = json!({
        "apiVersion": "plinth/v1",
        "kind": "Pool",
        "metadata": {"name": POOL, "labels": labels},
        "spec": {
            "backend": "local",
            "nodes": 1,
            "cpusPerNode": 1,
            "memoryGibPerNode": 1,
            "procurement": "spot",
            "pricePerNodeHour": 0.03,
            "workloadClasses": ["training", "fine_tuning", "batch_inference"],
        }
    });
    let queue = json!({
        "apiVersion": "plinth/v1",
        "kind": "Queue",
        "metadata": {"name": QUEUE, "labels": labels},
        "spec": {
            "team": "research",
            "workloadClasses": ["training", "fine_tuning", "batch_inference"],
            "quotas": [{"pool": POOL, "gpus": 0, "cpus": 1}],
        }
    });
    [pool, queue]
        .into_iter()
        .enumerate()
        .map(|(i, document)| SourcedDocument {
            file: Some("plinth up (spot demo)".into()),
            index: Some(i + 1),
            document,
        })
        .collect()
}

/// Applies the spot pool and queue and submits the job (once per data dir); a background task
/// interrupts the job's node after step `INTERRUPT_AT`, once.
pub async fn up_demo(conn: &Conn, data_dir: &Path) {
    let client = Client::new(conn);
    if client
        .get::<Value>(&format!("/api/v1/jobs/{JOB}"))
        .await
        .is_ok()
    {
        return;
    }
    let apply = ApplyRequest {
        documents: documents(),
        dry_run: false,
    };
    if let Err(e) = client.post::<_, Value>("/api/v1/apply", &apply).await {
        eprintln!("plinth: spot demo not set up: {}", e.message);
        return;
    }
    // The job's checkpoint directory must be absolute; the data dir may be relative.
    let checkpoint = data_dir.join("demo").join("spot-checkpoint");
    let checkpoint = std::path::absolute(&checkpoint).unwrap_or(checkpoint);
    let req = json!({
        "name": JOB,
        "spec": {
            "command": ["sh", "-c", script()],
            "team": "research",
            "queue": QUEUE,
            "class": "training",
            "spot": true,
            "checkpointDir": checkpoint.display().to_string(),
            "maxRetries": 3,
            "maxRuntime": "5m",
            "tags": {"source": "plinth-up", "project": "demo"},
        }
    });
    if let Err(e) = client.post::<_, Value>("/api/v1/jobs", &req).await {
        eprintln!("plinth: spot demo job not submitted: {}", e.message);
        return;
    }
    println!(
        "plinth: spot job {JOB} runs on pool {POOL}; its node is interrupted after step {INTERRUPT_AT} and it resumes from its checkpoint (plinth job describe {JOB}; plinth job logs {JOB})"
    );
    let conn = conn.clone();
    tokio::spawn(async move {
        let client = Client::new(&conn);
        match interrupt_after_step(&client, &checkpoint.join("step")).await {
            Ok(node) => println!(
                "plinth: spot demo: node {node} of pool {POOL} interrupted; {JOB} waits for a node and resumes from step {INTERRUPT_AT} or later"
            ),
            Err(why) => eprintln!("plinth: spot demo: no interruption ({why})"),
        }
    });
}

/// Waits (up to two minutes) until the job's checkpoint holds step `INTERRUPT_AT` or more, then
/// interrupts the node its attempt runs on; returns that node.
async fn interrupt_after_step(client: &Client, step_file: &Path) -> Result<String, String> {
    for _ in 0..240 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let step: u32 = std::fs::read_to_string(step_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if step < INTERRUPT_AT {
            continue;
        }
        let job: Value = client
            .get(&format!("/api/v1/jobs/{JOB}"))
            .await
            .map_err(|e| e.message)?;
        if job["status"]["state"] != "running" {
            return Err(format!("the job is {}", job["status"]["state"]));
        }
        let node = job["status"]["attempts"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|a| a["node"].as_str())
            .ok_or("the running attempt names no node")?
            .to_string();
        client
            .post::<_, Value>(
                &format!("/api/v1/pools/{POOL}/nodes/{node}/interrupt"),
                &json!({}),
            )
            .await
            .map_err(|e| e.message)?;
        return Ok(node);
    }
    Err("the job did not reach its checkpoint in time".into())
}
