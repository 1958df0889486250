//! The gateway end to end: real test upstreams on loopback, the gateway on port 0, reqwest as
//! the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use plinth_gateway::{Gateway, GatewayOptions, MemoryEvents, MemorySink};
use serde_json::{Value, json};

struct Setup {
    gw: Gateway,
    base: String,
    usage: Arc<MemorySink>,
    events: Arc<MemoryEvents>,
}

async fn setup(yaml: &str) -> Setup {
    let usage = Arc::new(MemorySink::new());
    let events = Arc::new(MemoryEvents::new());
    let gw = Gateway::builder(keys())
        .usage_sink(usage.clone())
        .canary_events(events.clone())
        .options(GatewayOptions {
            max_body_bytes: 64 * 1024,
            ..GatewayOptions::default()
        })
        .build();
    gw.set_deployments(deployments(yaml)).unwrap();
    let base = serve(&gw).await;
    Setup {
        gw,
        base,
        usage,
        events,
    }
}

fn one(name: &str, model: &str, url: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    models: [{model}]\n    versions:\n      - {{ name: v1, weight: 1, upstreams: [\"{url}\"], timeoutMs: 2000 }}\n{extra}"
    )
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Runs `gw` with `serve_workers` (`n` threads) on 127.0.0.1 port 0; returns the base URL.
fn serve_workers(gw: Gateway, n: usize) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let addr = "127.0.0.1:0".parse().unwrap();
        let _ = plinth_gateway::serve_workers(addr, gw, n, |a| {
            let _ = tx.send(a);
        });
    });
    format!(
        "http://{}",
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    )
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_model_and_rejects_bad_input_in_openai_shape() {
    let a = TestUpstream::start("up-a", Mode::Ok).await;
    let b = TestUpstream::start("up-b", Mode::Ok).await;
    let yaml = format!(
        "deployments:\n{}{}",
        one("alpha", "model-a", &a.url, ""),
        one("beta", "model-b", &b.url, "")
    );
    let s = setup(&yaml).await;

    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("model-a")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-plinth-deployment"), "alpha");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello from up-a");
    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("model-b")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello from up-b");
    assert_eq!((a.hits(), b.hits()), (1, 1));

    let r = post_json(
        &s.base,
        "/v1/embeddings",
        &json!({"model": "model-b", "input": "hello"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["embedding"][2], 1.0);

    let r = post_json(
        &s.base,
        "/v1/deployments/alpha/predict",
        &json!({"instances": [1, 2, 3]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"predictions": [3], "server": "up-a"}));

    // Unknown model, unknown deployment, unknown path.
    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &chat_body("nope")).await,
        404,
        "model_not_found",
    )
    .await;
    assert!(msg.contains("`nope`"), "{msg}");
    expect_error(
        post_json(&s.base, "/v1/deployments/nope/predict", &json!({})).await,
        404,
        "deployment_not_found",
    )
    .await;
    expect_error(
        post_json(&s.base, "/v1/nothing", &json!({})).await,
        404,
        "not_found",
    )
    .await;

    // Malformed JSON names what is wrong.
    let r = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{\"model\": \"model-a\", ")
        .send()
        .await
        .unwrap();
    let msg = expect_error(r, 400, "invalid_request").await;
    assert!(
        msg.contains("not valid JSON") && msg.contains("line 1"),
        "{msg}"
    );
    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &json!({"messages": []})).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(msg.contains("`model`"), "{msg}");
    expect_error(
        post_json(
            &s.base,
            "/v1/chat/completions",
            &json!({"model": "model-a", "stream": "yes"}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;

    // Oversized body (limit 64 KiB in this setup).
    let big =
        json!({"model": "model-a", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &big).await,
        413,
        "request_too_large",
    )
    .await;
    assert!(msg.contains("65536"), "{msg}");

    // Missing and wrong keys.
    let r = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&chat_body("model-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "www-authenticate"), "Bearer");
    expect_error(r, 401, "invalid_api_key").await;
    let r = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .bearer_auth("sk-wrong")
        .json(&chat_body("model-a"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_api_key").await;

    // Models list.
    let r = client()
        .get(format!("{}/v1/models", s.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let mut ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["model-a", "model-b"]);
    assert_eq!(
        (a.hits(), b.hits()),
        (2, 2),
        "errors never reached upstreams"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_within_binomial_bounds_and_sticky() {
    let stable = TestUpstream::start("stable", Mode::Ok).await;
    let canary = TestUpstream::start("canary", Mode::Ok).await;
    let yaml = format!(
        r#"deployments:
  - name: chat
    models: [m]
    stickiness: {{ from: header, name: x-session-id }}
    versions:
      - {{ name: v1, weight: 90, upstreams: ["{}"] }}
      - {{ name: v2, role: canary, weight: 10, upstreams: ["{}"] }}
"#,
        stable.url, canary.url
    );
    let s = setup(&yaml).await;
    let n = 2000usize;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let base = s.base.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..n / 8 {
                let r = c
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(KEY)
                    .json(&chat_body("m"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "task {t}");
                *counts.entry(header(&r, "x-plinth-version")).or_default() += 1;
            }
            counts
        }));
    }
    let mut canary_n = 0usize;
    for t in tasks {
        canary_n += t.await.unwrap().get("v2").copied().unwrap_or(0);
    }
    let expected = n as f64 * 0.1;
    let sigma = (n as f64 * 0.1 * 0.9).sqrt();
    assert!(
        (canary_n as f64 - expected).abs() <= 5.0 * sigma,
        "canary got {canary_n} of {n}, expected {expected} ± {:.0}",
        5.0 * sigma
    );
    assert_eq!(stable.hits() + canary.hits(), n);

    // Stickiness: each session sees one version; sessions spread over both.
    let c = client();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for sess in 0..200 {
        let mut versions = Vec::new();
        for _ in 0..5 {
            let r = c
                .post(format!("{}/v1/chat/completions", s.base))
                .bearer_auth(KEY)
                .header("x-session-id", format!("session-{sess}"))
                .json(&chat_body("m"))
                .send()
                .await
                .unwrap();
            versions.push(header(&r, "x-plinth-version"));
        }
        assert!(
            versions.iter().all(|v| v == &versions[0]),
            "session {sess} moved: {versions:?}"
        );
        *seen.entry(versions[0].clone()).or_default() += 1;
    }
    let sessions_on_canary = seen.get("v2").copied().unwrap_or(0);
    // 200 sessions at 10%: 20 expected, 5 sigma ≈ 21.
    assert!(
        (1..=42).contains(&sessions_on_canary),
        "sessions on canary: {sessions_on_canary}"
    );

    // Hot swap: all traffic to the canary.
    let swapped = yaml
        .replace("weight: 90", "weight: 0")
        .replace("role: canary, weight: 10", "weight: 10");
    s.gw.set_deployments(deployments(&swapped)).unwrap();
    for _ in 0..20 {
        let r = post_json(&s.base, "/v1/chat/completions", &chat_body("m")).await;
        assert_eq!(header(&r, "x-plinth-version"), "v2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_chunk_by_chunk_and_usage_is_counted() {
    let up = TestUpstream::start("streamer", Mode::Gated).await;
    let s = setup(&format!("deployments:\n{}", one("chat", "m", &up.url, ""))).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut r = post_json(&s.base, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    // The upstream holds the rest of the stream until released: the first chunk must arrive
    // through the gateway on its own.
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("first chunk arrives before the upstream finished")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"Hel\""));
    assert_eq!(up.streams_done(), 0, "upstream has not finished yet");
    up.release();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(
        text.contains("\"lo \"") && text.contains("\"streamer\""),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    wait_for("usage record", || !s.usage.records().is_empty()).await;
    let rec = &s.usage.records()[0];
    assert_eq!((rec.tokens_in, rec.tokens_out), (13, 3));
    assert!(rec.stream && rec.completed);
    assert_eq!(
        (rec.team.as_str(), rec.key_id.as_str()),
        ("team-a", "key-alpha")
    );

    // Non-streaming usage and metrics.
    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("m")).await;
    assert_eq!(r.status(), 200);
    wait_for("second record", || s.usage.records().len() == 2).await;
    let rec = &s.usage.records()[1];
    assert_eq!((rec.tokens_in, rec.tokens_out), (11, 5));
    assert!(!rec.stream && !rec.cache_hit && !rec.fallback_used);
    assert!(rec.total_seconds >= rec.upstream_seconds);
    let m = s.gw.metrics_text();
    for want in [
        "gen_ai_client_token_usage_count{gen_ai_operation_name=\"chat\",gen_ai_request_model=\"m\",gen_ai_token_type=\"input\"} 2",
        "gen_ai_client_token_usage_sum{gen_ai_operation_name=\"chat\",gen_ai_request_model=\"m\",gen_ai_token_type=\"output\"} 8.0",
        "gen_ai_server_request_duration_seconds_count{",
        "plinth_gateway_overhead_seconds_count 2",
        "plinth_gateway_requests_total{deployment=\"chat\",status=\"200\"} 2",
        "plinth_gateway_in_flight_requests 0",
    ] {
        assert!(m.contains(want), "metrics lack {want}:\n{m}");
    }
    let r = client()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("plinth_gateway_overhead_seconds")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_on_5xx_timeouts_and_retries_other_upstreams() {
    let broken = TestUpstream::start("broken", Mode::Status500).await;
    let hanging = TestUpstream::start("hanging", Mode::Hang).await;
    let backup = TestUpstream::start("backup", Mode::Ok).await;
    let yaml = format!(
        r#"deployments:
  - name: primary
    models: [m]
    fallbacks: [spare]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["{broken}"], timeoutMs: 300 }}
  - name: slow
    models: [slow-m]
    fallbacks: [spare]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["{hanging}"], timeoutMs: 300 }}
  - name: retrying
    models: [retry-m]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["{broken}", "{backup}"], retries: 1 }}
  - name: spare
    models: [spare-m]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["{backup}"] }}
  - name: lonely
    models: [lonely-m, lonely-slow]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["{broken}"], timeoutMs: 300 }}
  - name: lonely-hang
    models: [hang-m]
    versions:
      - {{ name: v1, weight: 1, upstreams: ["{hanging}"], timeoutMs: 300 }}
"#,
        broken = broken.url,
        hanging = hanging.url,
        backup = backup.url
    );
    let s = setup(&yaml).await;

    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-plinth-deployment"), "spare");
    assert_eq!(
        backup.last_body().unwrap()["model"],
        "spare-m",
        "model rewritten"
    );
    assert_eq!(broken.hits(), 1);

    let t0 = Instant::now();
    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("slow-m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-plinth-deployment"), "spare");
    assert!(t0.elapsed() < Duration::from_secs(5));

    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("retry-m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-plinth-deployment"), "retrying");

    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &chat_body("lonely-m")).await,
        502,
        "upstream_error",
    )
    .await;
    assert!(msg.contains("HTTP 500"), "{msg}");
    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &chat_body("hang-m")).await,
        504,
        "upstream_timeout",
    )
    .await;
    assert!(msg.contains("300 ms"), "{msg}");

    wait_for("records", || s.usage.records().len() == 5).await;
    let recs = s.usage.records();
    let fb: Vec<bool> = recs.iter().map(|r| r.fallback_used).collect();
    assert_eq!(fb, [true, true, false, false, false]);
    assert_eq!(recs[0].served_by, "spare");
    assert_eq!(recs[0].deployment, "primary");
    assert!(
        s.gw.metrics_text()
            .contains("plinth_gateway_fallbacks_total{deployment=\"primary\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_misses_bypass_and_expiry() {
    let up = TestUpstream::start("cached", Mode::Ok).await;
    let s = setup(&format!(
        "deployments:\n{}",
        one(
            "chat",
            "m",
            &up.url,
            "    cache: { ttlSeconds: 1, maxBytes: 100000 }\n"
        )
    ))
    .await;
    let body = chat_body("m");
    let r = post_json(&s.base, "/v1/chat/completions", &body).await;
    assert_eq!(header(&r, "x-plinth-cache"), "miss");
    let first = r.text().await.unwrap();
    // Same request with keys in another order: a hit, same bytes, upstream not called.
    let reordered: Value =
        serde_json::from_str(r#"{"messages": [{"content": "hi", "role": "user"}], "model": "m"}"#)
            .unwrap();
    let r = post_json(&s.base, "/v1/chat/completions", &reordered).await;
    assert_eq!(header(&r, "x-plinth-cache"), "hit");
    assert_eq!(r.text().await.unwrap(), first);
    assert_eq!(up.hits(), 1);
    // Another request: a miss.
    let mut other = body.clone();
    other["temperature"] = json!(0.5);
    let r = post_json(&s.base, "/v1/chat/completions", &other).await;
    assert_eq!(header(&r, "x-plinth-cache"), "miss");
    assert_eq!(up.hits(), 2);
    // Opt-outs.
    for (h, v) in [("x-plinth-cache", "bypass"), ("cache-control", "no-cache")] {
        let r = client()
            .post(format!("{}/v1/chat/completions", s.base))
            .bearer_auth(KEY)
            .header(h, v)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-plinth-cache"), "bypass");
    }
    assert_eq!(up.hits(), 4);
    // Streams are never cached.
    let mut st = body.clone();
    st["stream"] = json!(true);
    let r = post_json(&s.base, "/v1/chat/completions", &st).await;
    assert_eq!(header(&r, "x-plinth-cache"), "");
    r.text().await.unwrap();
    assert_eq!(up.hits(), 5);
    // Expiry.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = post_json(&s.base, "/v1/chat/completions", &body).await;
    assert_eq!(header(&r, "x-plinth-cache"), "miss");
    assert_eq!(up.hits(), 6);
    wait_for("records", || s.usage.records().len() == 7).await;
    let hit = &s.usage.records()[1];
    assert!(hit.cache_hit);
    assert_eq!((hit.tokens_in, hit.tokens_out), (11, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_429_with_retry_after() {
    let up = TestUpstream::start("limited", Mode::Ok).await;
    let s = setup(&format!(
        "deployments:\n{}",
        one(
            "chat",
            "m",
            &up.url,
            "    limits:\n      - { scope: key, windowSeconds: 60, requests: 2 }\n      - { scope: team, windowSeconds: 60, tokens: 40 }\n"
        )
    ))
    .await;
    for _ in 0..2 {
        let r = post_json(&s.base, "/v1/chat/completions", &chat_body("m")).await;
        assert_eq!(r.status(), 200);
    }
    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("m")).await;
    let retry: u64 = header(&r, "retry-after").parse().expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    let msg = expect_error(r, 429, "rate_limit_exceeded").await;
    assert!(msg.contains("key-alpha"), "{msg}");
    assert_eq!(up.hits(), 2);
    // The other key of the team still has requests, until the team's 40 tokens are spent
    // (16 tokens per answer: 32 after two, 48 after three).
    let send2 = || async {
        client()
            .post(format!("{}/v1/chat/completions", s.base))
            .bearer_auth(KEY2)
            .json(&chat_body("m"))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(send2().await.status(), 200);
    wait_for("tokens counted", || s.usage.records().len() >= 4).await;
    let r = send2().await;
    assert!(!header(&r, "retry-after").is_empty());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "tokens", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_and_the_event_fires() {
    let stable = TestUpstream::start("stable", Mode::Ok).await;
    let canary = TestUpstream::start("canary", Mode::Status500).await;
    let yaml = format!(
        r#"deployments:
  - name: chat
    models: [m]
    versions:
      - {{ name: v1, weight: 50, upstreams: ["{}"] }}
      - {{ name: v2, role: canary, weight: 50, upstreams: ["{}"] }}
    canary: {{ windowSeconds: 60, minRequests: 10, maxErrorRateMargin: 0.2 }}
"#,
        stable.url, canary.url
    );
    let s = setup(&yaml).await;
    for _ in 0..100 {
        let r = post_json(&s.base, "/v1/chat/completions", &chat_body("m")).await;
        // Canary failures fall back to stable: clients never see them.
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-plinth-version"), "v1");
    }
    let events = s.events.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].canary_version, "v2");
    assert!(events[0].canary_error_rate > 0.9);
    assert_eq!(canary.hits(), 10, "no canary traffic after the rollback");
    let st = s.gw.status();
    assert!(st[0].canary_rolled_back);
    assert_eq!(st[0].versions[1].effective_weight, 0);
    assert!(
        s.gw.metrics_text()
            .contains("plinth_gateway_canary_rollbacks_total{deployment=\"chat\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_upstreams_give_clean_errors_and_the_gateway_keeps_serving() {
    let garbage = TestUpstream::start("garbage", Mode::Garbage).await;
    let half = TestUpstream::start("half", Mode::HalfThenClose).await;
    let stall = TestUpstream::start("stall", Mode::StallAfterFirst).await;
    let good = TestUpstream::start("good", Mode::Ok).await;
    let reset = reset_upstream().await;
    let yaml = format!(
        "deployments:\n{}{}{}{}{}{}",
        one("garbage", "garbage-m", &garbage.url, ""),
        one("half", "half-m", &half.url, ""),
        one("reset", "reset-m", &reset, ""),
        one("stall", "stall-m", &stall.url, "").replace("2000", "300"),
        one("good", "good-m", &good.url, ""),
        one("rescued", "rescued-m", &reset, "    fallbacks: [good]\n"),
    );
    let s = setup(&yaml).await;

    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &chat_body("garbage-m")).await,
        502,
        "upstream_error",
    )
    .await;
    assert!(msg.contains("not JSON"), "{msg}");
    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &chat_body("reset-m")).await,
        502,
        "upstream_error",
    )
    .await;
    assert!(msg.contains("connection"), "{msg}");
    let msg = expect_error(
        post_json(&s.base, "/v1/chat/completions", &chat_body("half-m")).await,
        502,
        "upstream_error",
    )
    .await;
    assert!(msg.contains("response body"), "{msg}");
    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("rescued-m")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-plinth-deployment"), "good");

    // Streams that break off or stall end with an OpenAI-shaped error event.
    for (model, code) in [
        ("half-m", "upstream_error"),
        ("stall-m", "upstream_timeout"),
    ] {
        let mut body = chat_body(model);
        body["stream"] = json!(true);
        let r = post_json(&s.base, "/v1/chat/completions", &body).await;
        assert_eq!(r.status(), 200);
        let text = tokio::time::timeout(Duration::from_secs(10), r.text())
            .await
            .expect("stream ends")
            .expect("stream ends cleanly");
        let last = text
            .lines()
            .rev()
            .find(|l| l.starts_with("data: "))
            .unwrap();
        let v: Value = serde_json::from_str(&last["data: ".len()..]).unwrap();
        assert_eq!(v["error"]["code"], code, "{text}");
        assert!(
            text.contains("\"Hel\""),
            "first chunk passed through: {text}"
        );
    }
    for _ in 0..5 {
        let r = post_json(&s.base, "/v1/chat/completions", &chat_body("good-m")).await;
        assert_eq!(r.status(), 200);
    }
    wait_for("in-flight back to 0", || s.gw.in_flight() == 0).await;
    let recs = s.usage.records();
    assert!(recs.iter().filter(|r| r.stream).all(|r| !r.completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_stream_leaks_nothing() {
    let up = TestUpstream::start("gated", Mode::Gated).await;
    let s = setup(&format!("deployments:\n{}", one("chat", "m", &up.url, ""))).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let mut r = post_json(&s.base, "/v1/chat/completions", &body).await;
    let first = r.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(s.gw.in_flight(), 1);
    drop(r);
    up.release();
    wait_for("in-flight back to 0", || s.gw.in_flight() == 0).await;
    wait_for("usage record", || s.usage.records().len() == 1).await;
    assert!(!s.usage.records()[0].completed);
    // Still serving.
    up.set_mode(Mode::Ok);
    let r = post_json(&s.base, "/v1/chat/completions", &chat_body("m")).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_thread_workers_serve_with_shared_state() {
    let up = TestUpstream::start("workers", Mode::Ok).await;
    let usage = Arc::new(MemorySink::new());
    let gw = Gateway::builder(keys()).usage_sink(usage.clone()).build();
    gw.set_deployments(deployments(&format!(
        "deployments:\n{}",
        one(
            "chat",
            "m",
            &up.url,
            "    limits:\n      - { scope: key, windowSeconds: 60, requests: 30 }\n"
        )
    )))
    .unwrap();
    let base = serve_workers(gw.clone(), 2);
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..40 {
        // A fresh client each time: new connections spread over both workers.
        let r = client()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&chat_body("m"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, limited), (30, 10), "limits are shared by all workers");
    assert_eq!(up.hits(), 30);
    wait_for("records", || usage.records().len() == 40).await;
}

/// `gw` with the deployment `chat` (model `m`) on `upstream`, served by one worker thread (so
/// one pool of upstream connections); returns the base URL.
fn one_worker_in_front_of(gw: Gateway, upstream: &str) -> String {
    gw.set_deployments(deployments(&format!(
        "deployments:\n{}",
        one("chat", "m", upstream, "")
    )))
    .unwrap();
    serve_workers(gw, 1)
}

/// A chat request through the gateway at `base` to a `RawUpstream`, answered by it.
fn raw_chat(base: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
    let base = base.to_owned();
    async move {
        let r = post_json(&base, "/v1/chat/completions", &chat_body("m")).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["id"], "raw");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_reused_and_replaced_when_closed() {
    let up = RawUpstream::start().await;
    // The base URL has a path: it prefixes the OpenAI path, in origin form, with `Host` set.
    let usage = Arc::new(MemorySink::new());
    let gw = Gateway::builder(keys()).usage_sink(usage.clone()).build();
    let base = one_worker_in_front_of(gw, &format!("{}/prefix", up.url));
    let chat = || raw_chat(&base);
    for _ in 0..10 {
        chat().await;
    }
    assert_eq!(
        up.connections(),
        1,
        "ten requests one after the other share a connection"
    );
    let heads = up.heads();
    assert_eq!(heads.len(), 10);
    let host = up.url.strip_prefix("http://").unwrap();
    for h in &heads {
        assert!(
            h.starts_with("post /prefix/v1/chat/completions http/1.1\r\n"),
            "origin-form request line: {h}"
        );
        assert!(
            h.contains(&format!("\r\nhost: {host}\r\n")),
            "host header: {h}"
        );
    }

    // Concurrent requests open more connections, which are all kept afterwards.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(chat()));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let opened = up.connections();
    assert!(
        (1..=8).contains(&opened),
        "{opened} connections for 8 requests"
    );
    for _ in 0..10 {
        chat().await;
    }
    assert_eq!(up.connections(), opened, "idle connections are reused");

    // The upstream closes each connection after answering: the idle ones are used up, one
    // request each, then every request needs a new one; a closed connection is never used
    // again (each request is sent once the gateway has seen the close) and no request fails.
    up.close_after_answer(true);
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        chat().await;
    }
    assert_eq!(
        up.connections(),
        12,
        "{opened} idle connections, then new ones"
    );
    up.close_after_answer(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        chat().await;
    }
    assert_eq!(up.connections(), 13, "one new connection, then kept");
    assert_eq!(up.heads().len(), 45);
    wait_for("records", || usage.records().len() == 45).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_idle_past_the_pool_timeout_are_closed_not_reused() {
    let up = RawUpstream::start().await;
    let gw = Gateway::builder(keys())
        .options(GatewayOptions {
            pool_idle_timeout: Duration::from_millis(300),
            ..GatewayOptions::default()
        })
        .build();
    let base = one_worker_in_front_of(gw, &up.url);
    let chat = || raw_chat(&base);
    // Concurrent requests leave several idle connections.
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(chat())).collect();
    for t in tasks {
        t.await.unwrap();
    }
    let opened = up.connections();
    assert!(
        opened >= 2,
        "8 concurrent requests opened {opened} connection(s)"
    );
    assert_eq!(up.closed(), 0);
    // Requests one after the other for 0.8 s use the most recently used connection only: the
    // others pass the 300 ms idle timeout and are closed, not kept open.
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while tokio::time::Instant::now() < until {
        chat().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.connections(), opened, "the busy connection was reused");
    wait_for("the idle connections closed", || up.closed() == opened - 1).await;
    // After a pause past the timeout, the last one is replaced too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    chat().await;
    assert_eq!(up.connections(), opened + 1);
    wait_for("the stale connection closed", || up.closed() == opened).await;
}
