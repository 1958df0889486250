//! Limit windows shared through a real `redis-server` ([`RedisLimitStore`]): several
//! [`Limiter`]s (one per gateway) sharing one store admit the limit together, windows expire,
//! passwords and databases from the URL are used, a restarted Redis is reconnected to, a frozen
//! one times out instead of hanging a request, and errors name the address but not the password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plinth_gateway::limits::{Counts, LimitKind, LimitStore, Limiter, WindowKey};
use plinth_gateway::limits_redis::{
    EXPIRY_SLACK_SECONDS, IO_TIMEOUT, KEY_PREFIX, PAUSE_AFTER_TIMEOUT, RedisErrorKind,
    RedisLimitStore,
};
use plinth_gateway::{Identity, LimitScope, LimitSpec};
use redis_server::RedisServer;

fn id(team: &str, key: &str) -> Identity {
    Identity {
        team: team.into(),
        key_id: key.into(),
    }
}

fn store(url: &str) -> Arc<dyn LimitStore> {
    Arc::new(RedisLimitStore::from_url(url).unwrap())
}

fn requests(scope: LimitScope, window_seconds: u64, n: u64) -> LimitSpec {
    LimitSpec {
        scope,
        window_seconds,
        requests: Some(n),
        tokens: None,
        spend: None,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A window of an hour around now.
fn window(deployment: &str, subject: &str) -> WindowKey {
    let start = now().div_euclid(3600) * 3600;
    WindowKey {
        deployment: deployment.into(),
        limit: "0:team:3600".into(),
        subject: subject.into(),
        window_start: start,
        window_end: start + 3600,
    }
}

fn counts(requests: u64, tokens: u64, spend: f64) -> Counts {
    Counts {
        requests,
        tokens,
        spend,
    }
}

#[tokio::test]
async fn two_gateways_sharing_redis_admit_the_limit_together() {
    let redis = RedisServer::start();
    let shared = store(&redis.url());
    // Two limiters = two gateways. A day window: the test does not straddle its end.
    let mk = || {
        Limiter::new(vec![requests(LimitScope::Team, 86_400, 10)], None)
            .with_store("chat", Some(Arc::clone(&shared)))
    };
    let (a, b) = (mk(), mk());
    let who = id("t", "k");
    let mut admitted = 0;
    let mut refused = Vec::new();
    for n in 0..20 {
        let g = if n % 2 == 0 { &a } else { &b };
        match g.admit(&who, "chat").await {
            Ok(()) => admitted += 1,
            Err(r) => refused.push(r),
        }
    }
    // Chunks of 1 for a limit of 10: exactly the limit, whichever gateway asked.
    assert_eq!(admitted, 10);
    assert_eq!(refused.len(), 10);
    assert!(
        refused.iter().all(|r| r.kind == LimitKind::Requests
            && r.retry_after >= 1
            && r.retry_after <= 86_400)
    );
    assert!(
        refused[0].message.contains("10 requests per 86400s"),
        "{}",
        refused[0].message
    );
    // Another team has its own window.
    assert!(a.admit(&id("u", "k2"), "chat").await.is_ok());
    // Two separate gateways (separate stores, separate connections) agree too.
    let c = Limiter::new(vec![requests(LimitScope::Team, 86_400, 10)], None)
        .with_store("chat", Some(store(&redis.url())));
    assert!(c.admit(&who, "chat").await.is_err(), "team t is spent");
}

#[tokio::test]
async fn big_limits_reserve_chunks_and_never_admit_more_than_the_limit_through_redis() {
    let redis = RedisServer::start();
    let mk = || {
        Limiter::new(vec![requests(LimitScope::Key, 86_400, 500)], None)
            .with_store("chat", Some(store(&redis.url())))
    };
    let (a, b, c) = (mk(), mk(), mk());
    let who = id("t", "k");
    let mut admitted = 0;
    // Gateway a takes most traffic; b and c each hold an unused part of a chunk of 10.
    for n in 0..1000 {
        let g = match n % 10 {
            0 => &b,
            1 => &c,
            _ => &a,
        };
        if g.admit(&who, "chat").await.is_ok() {
            admitted += 1;
        }
    }
    assert!(admitted <= 500, "{admitted}");
    assert!(admitted >= 500 - 3 * 10, "{admitted}");
}

#[tokio::test]
async fn token_counts_reach_the_other_gateway_at_the_next_sync_through_redis() {
    let redis = RedisServer::start();
    let mk = || {
        Limiter::new(
            vec![LimitSpec {
                scope: LimitScope::Team,
                window_seconds: 86_400,
                requests: None,
                tokens: Some(100),
                spend: None,
            }],
            None,
        )
        .with_store("chat", Some(store(&redis.url())))
    };
    let (a, b) = (mk(), mk());
    let who = id("t", "k");
    assert!(a.admit(&who, "chat").await.is_ok());
    assert!(b.admit(&who, "chat").await.is_ok());
    a.add_tokens(&who, 60, 0);
    b.add_tokens(&who, 30, 20);
    // Each has seen only its own tokens so far (60 and 50 of 100).
    assert!(a.admit(&who, "chat").await.is_ok());
    assert!(b.admit(&who, "chat").await.is_ok());
    a.sync().await;
    b.sync().await;
    // b has seen 60 + 50 = 110; a saw only its own 60 at its sync.
    let r = b.admit(&who, "chat").await.expect_err("110 of 100 tokens");
    assert_eq!(r.kind, LimitKind::Tokens);
    assert!(a.admit(&who, "chat").await.is_ok());
    a.sync().await;
    assert!(a.admit(&who, "chat").await.is_err(), "a sees 110 too");
}

#[tokio::test]
async fn totals_add_up_atomically_and_windows_expire_after_their_end() {
    let redis = RedisServer::start();
    let s = RedisLimitStore::from_url(&redis.url()).unwrap();
    let key = window("chat", "research");
    assert_eq!(
        s.add(&key, counts(3, 100, 0.25)).await.unwrap(),
        counts(3, 100, 0.25)
    );
    assert_eq!(
        s.add(&key, counts(2, 0, 0.5)).await.unwrap(),
        counts(5, 100, 0.75)
    );
    // Many concurrent additions from two stores (two gateways): none is lost.
    let other = RedisLimitStore::from_url(&redis.url()).unwrap();
    let mut tasks = Vec::new();
    for s in [Arc::new(s), Arc::new(other)] {
        for _ in 0..50 {
            let (s, key) = (Arc::clone(&s), key.clone());
            tasks.push(tokio::spawn(async move {
                s.add(&key, counts(1, 10, 0.125)).await.unwrap()
            }));
        }
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().requests);
    }
    seen.sort_unstable();
    // Each addition saw a distinct total: 6, 7, …, 105.
    assert_eq!(seen, (6..=105).collect::<Vec<_>>());
    let s = RedisLimitStore::from_url(&redis.url()).unwrap();
    assert_eq!(
        s.add(&key, Counts::default()).await.unwrap(),
        counts(105, 1100, 13.25)
    );
    // One hash under the shared prefix, with the three counters, expiring after the window.
    let name = RedisLimitStore::key(&key);
    assert!(name.starts_with(KEY_PREFIX), "{name}");
    let keys = redis.command(&["KEYS", "plinth:limits:*"]).strings();
    assert_eq!(keys, vec![name.clone()]);
    assert_eq!(
        redis.command(&["HGET", &name, "requests"]).text(),
        "105".to_string()
    );
    let ttl = redis.command(&["TTL", &name]).int();
    let left = key.window_end + EXPIRY_SLACK_SECONDS - now();
    assert!(
        ttl > 0 && (ttl - left).abs() <= 2,
        "ttl {ttl}, expected {left}"
    );
    // A window that ended long ago expires at once.
    let old = WindowKey {
        window_start: 0,
        window_end: 60,
        ..key.clone()
    };
    assert_eq!(
        s.add(&old, counts(1, 0, 0.0)).await.unwrap(),
        counts(1, 0, 0.0)
    );
    assert_eq!(
        redis
            .command(&["EXISTS", &RedisLimitStore::key(&old)])
            .int(),
        0
    );
}

#[tokio::test]
async fn parts_with_colons_do_not_share_a_window() {
    let redis = RedisServer::start();
    let s = RedisLimitStore::from_url(&redis.url()).unwrap();
    let mut a = window("a:b", "c");
    let mut b = window("a", "b:c");
    a.limit = "0:team:3600".into();
    b.limit = "0:team:3600".into();
    assert_eq!(s.add(&a, counts(1, 0, 0.0)).await.unwrap().requests, 1);
    assert_eq!(s.add(&b, counts(1, 0, 0.0)).await.unwrap().requests, 1);
    assert_eq!(
        redis.command(&["KEYS", "plinth:limits:*"]).strings().len(),
        2
    );
}

#[tokio::test]
async fn the_database_in_the_url_is_selected() {
    let redis = RedisServer::start();
    let s = RedisLimitStore::from_url(&format!("{}/3", redis.url())).unwrap();
    let key = window("chat", "t");
    s.add(&key, counts(4, 0, 0.0)).await.unwrap();
    let name = RedisLimitStore::key(&key);
    assert_eq!(
        redis.command_in(3, &["HGET", &name, "requests"]).text(),
        "4"
    );
    assert_eq!(redis.command(&["EXISTS", &name]).int(), 0, "not in db 0");
}

#[tokio::test]
async fn a_password_in_the_url_is_used_and_a_missing_or_wrong_one_fails_clearly() {
    let redis = RedisServer::with_password("hunter2-secret");
    let key = window("chat", "t");
    // `:password@` and `user:password@` (Redis's `default` user).
    let s = RedisLimitStore::from_url(&redis.url()).unwrap();
    s.ping().await.unwrap();
    assert_eq!(s.add(&key, counts(1, 0, 0.0)).await.unwrap().requests, 1);
    let port = redis.port;
    let s = RedisLimitStore::from_url(&format!("redis://default:hunter2-secret@127.0.0.1:{port}"))
        .unwrap();
    assert_eq!(s.add(&key, counts(1, 0, 0.0)).await.unwrap().requests, 2);
    let address = format!("redis://127.0.0.1:{port}/0");
    // Without the password: Redis refuses every command.
    let s = RedisLimitStore::from_url(&redis.url_without_password()).unwrap();
    let e = s.ping().await.unwrap_err();
    assert_eq!(e.kind, RedisErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("NOAUTH"), "{e}");
    assert!(e.to_string().contains(&address), "{e}");
    let e = s.add(&key, counts(1, 0, 0.0)).await.unwrap_err();
    assert!(e.contains("NOAUTH") && e.contains(&address), "{e}");
    // A wrong password: authentication fails, and the error does not show it.
    let s = RedisLimitStore::from_url(&format!("redis://:wrong-secret@127.0.0.1:{port}")).unwrap();
    let e = s.ping().await.unwrap_err();
    assert_eq!(e.kind, RedisErrorKind::Refused, "{e}");
    let text = e.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("WRONGPASS"), "{text}");
    assert!(text.contains(&address), "{text}");
    assert!(!text.contains("secret"), "{text}");
    let e = s.add(&key, counts(1, 0, 0.0)).await.unwrap_err();
    assert!(
        !e.contains("secret") && e.contains("authentication failed"),
        "{e}"
    );
    assert!(!format!("{s:?}").contains("secret"));
    // Nothing was counted by the refused calls.
    assert_eq!(
        redis
            .command(&["HGET", &RedisLimitStore::key(&key), "requests"])
            .text(),
        "2"
    );
}

#[tokio::test]
async fn the_store_recovers_after_redis_restarts() {
    let mut redis = RedisServer::with_password("pw-secret");
    let s = Arc::new(RedisLimitStore::from_url(&redis.url()).unwrap());
    let key = window("chat", "t");
    // Concurrent calls: several connections, idle in the pool afterwards.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (s, key) = (Arc::clone(&s), key.clone());
            tokio::spawn(async move { s.add(&key, counts(1, 0, 0.0)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    redis.stop();
    let e = s.add(&key, counts(1, 0, 0.0)).await.unwrap_err();
    let address = format!("redis://127.0.0.1:{}/0", redis.port);
    assert!(e.contains(&address), "{e}");
    assert!(!e.contains("pw-secret"), "{e}");
    let e = s.ping().await.unwrap_err();
    assert_eq!(e.kind, RedisErrorKind::Unreachable, "{e}");
    redis.restart();
    // Nothing was saved: the window starts again, on a fresh connection (with AUTH again).
    assert_eq!(
        s.add(&key, counts(1, 0, 0.0)).await.unwrap(),
        counts(1, 0, 0.0)
    );
    assert_eq!(s.add(&key, counts(1, 0, 0.0)).await.unwrap().requests, 2);
}

#[tokio::test]
async fn a_frozen_redis_times_out_instead_of_hanging_and_is_used_again_once_it_answers() {
    let redis = RedisServer::start();
    let s = RedisLimitStore::from_url(&redis.url()).unwrap();
    let key = window("chat", "t");
    s.add(&key, counts(1, 0, 0.0)).await.unwrap();
    redis.freeze();
    let started = Instant::now();
    let e = s.add(&key, counts(1, 0, 0.0)).await.unwrap_err();
    let took = started.elapsed();
    assert!(e.contains("no answer within"), "{e}");
    assert!(took < IO_TIMEOUT * 3, "{took:?}");
    // Meanwhile calls fail at once instead of waiting again.
    let started = Instant::now();
    let e = s.add(&key, counts(1, 0, 0.0)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100), "{e}");
    // A limiter on the frozen store keeps admitting, without waiting a second per request.
    let l = Limiter::new(vec![requests(LimitScope::Team, 60, 3)], None).with_store(
        "chat",
        Some(Arc::new(RedisLimitStore::from_url(&redis.url()).unwrap())),
    );
    let started = Instant::now();
    for _ in 0..20 {
        assert!(l.admit(&id("t", "k"), "chat").await.is_ok());
    }
    assert!(
        started.elapsed() < IO_TIMEOUT * 4,
        "{:?}",
        started.elapsed()
    );
    redis.thaw();
    tokio::time::sleep(PAUSE_AFTER_TIMEOUT + Duration::from_millis(100)).await;
    // The write sent while it was frozen may or may not be applied once it wakes: 2 or 3.
    let total = s.add(&key, counts(1, 0, 0.0)).await.unwrap().requests;
    assert!((2..=3).contains(&total), "{total}");
}

#[tokio::test]
async fn an_unreachable_redis_does_not_refuse_requests() {
    let mut redis = RedisServer::with_password("pw-secret");
    let url = redis.url();
    redis.stop();
    let s = RedisLimitStore::from_url(&url).unwrap();
    let e = s.ping().await.unwrap_err();
    assert_eq!(e.kind, RedisErrorKind::Unreachable);
    assert!(e.to_string().contains("cannot connect"), "{e}");
    assert!(!e.to_string().contains("pw-secret"), "{e}");
    let l = Limiter::new(vec![requests(LimitScope::Team, 60, 3)], None)
        .with_store("chat", Some(Arc::new(s)));
    for _ in 0..5 {
        assert!(l.admit(&id("t", "k"), "chat").await.is_ok());
    }
}
