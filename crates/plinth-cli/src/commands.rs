//! The client subcommands and `serve`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use plinth_types::api::{
    ApplyAction, ApplyRequest, ApplyResponse, CreateTokenRequest, CreatedToken, DeleteResponse,
    Overview, SourcedDocument, TokenInfo,
};
use plinth_types::audit::{AuditEvent, AuditVerification};
use plinth_types::{Identity, ResourceView, Role};

use crate::client::{Client, CmdResult, Failure, Saved, enc, saved_path};
use crate::output::{Format, dash, emit, short, table};
use crate::{Conn, ServeArgs};

pub async fn serve(args: ServeArgs) -> CmdResult {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let config = plinth_config::ServerConfig::load(&env, args.overrides())
        .map_err(|e| Failure::new(3, e.to_string()))?;
    plinth_server::init_logging(config.log_format, &config.log_level);
    plinth_server::serve(config, |started| {
        println!("plinth: listening on http://{}", started.addr);
        println!("plinth: console at http://{}/console", started.addr);
        if let Some(g) = started.gateway_addr {
            println!("plinth: inference gateway (OpenAI-compatible) at http://{g}/v1");
        }
        if let Some(t) = &started.admin_token {
            println!("plinth: admin token (shown once; it is stored only as a hash): {t}");
        }
    })
    .await
    .map_err(|e| Failure::new(7, e.to_string()))?;
    Ok(0)
}

pub async fn login(conn: Conn) -> CmdResult {
    let client = Client::new(&conn);
    if client.token().is_none() {
        return Err(Failure::new(
            3,
            "no token: pass --token or set PLINTH_TOKEN",
        ));
    }
    let who: Identity = client.get("/api/v1/whoami").await?;
    let path = saved_path().ok_or_else(|| {
        Failure::new(
            1,
            "cannot find a config directory (set HOME or PLINTH_CONFIG_DIR)",
        )
    })?;
    let saved = Saved {
        server: Some(client.server.clone()),
        token: client.token().map(str::to_string),
    };
    crate::client::write_private(
        &path,
        &serde_json::to_string_pretty(&saved).unwrap_or_default(),
        false,
    )
    .map_err(|e| {
        Failure::new(
            1,
            format!("cannot save credentials to {}: {e}", path.display()),
        )
    })?;
    println!(
        "logged in to {} as {} (role {}, team {})",
        client.server,
        who.name,
        who.role,
        dash(who.team.as_deref())
    );
    Ok(0)
}

pub async fn whoami(conn: Conn) -> CmdResult {
    let who: Identity = Client::new(&conn).get("/api/v1/whoami").await?;
    emit(conn.output, &who, |w| {
        table(
            &["TOKEN", "NAME", "TEAM", "ROLE"],
            &[vec![
                w.token_id.clone(),
                w.name.clone(),
                dash(w.team.as_deref()),
                w.role.to_string(),
            ]],
        );
    });
    Ok(0)
}

pub async fn status(conn: Conn) -> CmdResult {
    let client = Client::new(&conn);
    let o: Overview = client.get("/api/v1/overview").await?;
    emit(conn.output, &o, |o| {
        println!("server:  {}", client.server);
        println!(
            "pools:   {} ({} nodes, {} GPUs, {} CPUs)",
            o.pools, o.nodes, o.gpus, o.cpus
        );
        println!("teams:   {}", o.teams);
        println!("queues:  {}", o.queues);
        println!("audit:   {} events", o.audit_events);
    });
    Ok(0)
}

/// Reads every YAML document from the named files and directories, in a stable order.
fn read_documents(paths: &[PathBuf]) -> Result<Vec<SourcedDocument>, Failure> {
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(p.clone());
        } else if p.is_dir() {
            collect_yaml(p, &mut files)
                .map_err(|e| Failure::new(3, format!("{}: {e}", p.display())))?;
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err(Failure::new(
            3,
            "no YAML files found (looked for *.yaml and *.yml)",
        ));
    }
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(&f)
        }
        .map_err(|e| Failure::new(3, format!("{name}: cannot read: {e}")))?;
        match plinth_config::parse_yaml_documents(&text, &name) {
            Ok(d) => docs.extend(d),
            Err(e) => problems.push(e.to_string()),
        }
    }
    // Validate locally too, so every problem in every file is reported at once.
    // Job documents are checked by the server's job controller (with the scheduler).
    for d in &docs {
        if d.document.get("kind").and_then(|k| k.as_str()) == Some("Job") {
            continue;
        }
        if let Err(e) = plinth_config::validate_document(d) {
            problems.push(e.to_string());
        }
    }
    if !problems.is_empty() {
        let message = if problems.len() == 1 {
            problems.remove(0)
        } else {
            format!("{} invalid documents; nothing was applied", problems.len())
        };
        return Err(Failure {
            message,
            details: problems,
            exit_code: 3,
        });
    }
    Ok(docs)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_yaml(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

pub async fn apply(conn: Conn, files: Vec<PathBuf>, dry_run: bool) -> CmdResult {
    let documents = read_documents(&files)?;
    let resp: ApplyResponse = Client::new(&conn)
        .post("/api/v1/apply", &ApplyRequest { documents, dry_run })
        .await?;
    emit(conn.output, &resp, print_apply);
    Ok(0)
}

pub fn print_apply(resp: &ApplyResponse) {
    let suffix = if resp.dry_run { " (dry run)" } else { "" };
    for r in &resp.results {
        println!(
            "{}/{} {}{suffix}",
            r.kind.to_ascii_lowercase(),
            r.name,
            r.action.as_str()
        );
        if resp.dry_run && r.action != ApplyAction::Unchanged {
            for c in &r.changes {
                let b = c.before.as_ref().map(short);
                let a = c.after.as_ref().map(short);
                match (b, a) {
                    (None, Some(a)) => println!("  + {}: {a}", c.path),
                    (Some(b), None) => println!("  - {}: {b}", c.path),
                    (Some(b), Some(a)) => println!("  ~ {}: {b} -> {a}", c.path),
                    (None, None) => {}
                }
            }
        }
    }
}

fn kind_path(kind: &str) -> String {
    enc(kind)
}

pub async fn get(conn: Conn, kind: String, name: Option<String>) -> CmdResult {
    if is_budget(&kind) && conn.output == Format::Table {
        return crate::cost::get_budgets(&conn, name.as_deref()).await;
    }
    let client = Client::new(&conn);
    let items: Vec<ResourceView> = match &name {
        Some(n) => vec![
            client
                .get(&format!(
                    "/api/v1/resources/{}/{}",
                    kind_path(&kind),
                    enc(n)
                ))
                .await?,
        ],
        None => {
            client
                .get(&format!("/api/v1/resources/{}", kind_path(&kind)))
                .await?
        }
    };
    match (conn.output, &name) {
        (Format::Table, _) => print_resources(&items),
        (_, Some(_)) => emit(conn.output, &items[0], |_| {}),
        (_, None) => emit(conn.output, &items, |_| {}),
    }
    Ok(0)
}

fn print_resources(items: &[ResourceView]) {
    let kind = items.first().map(|i| i.kind.as_str()).unwrap_or("");
    let s = |v: &ResourceView, k: &str| v.spec.get(k).map(short).unwrap_or_else(|| "-".into());
    match kind {
        "Pool" => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    let acc = v
                        .spec
                        .get("accelerator")
                        .map(|a| format!("{}x {}", short(&a["count"]), short(&a["type"])))
                        .unwrap_or_else(|| "cpu".into());
                    let price = v
                        .spec
                        .get("pricePerGpuHour")
                        .or(v.spec.get("pricePerNodeHour"))
                        .map(short)
                        .unwrap_or_else(|| "-".into());
                    vec![
                        v.metadata.name.clone(),
                        s(v, "backend"),
                        s(v, "nodes"),
                        acc,
                        s(v, "procurement"),
                        format!("{price} {}", s(v, "currency")),
                        s(v, "region"),
                    ]
                })
                .collect();
            table(
                &[
                    "NAME",
                    "BACKEND",
                    "NODES",
                    "ACCELERATORS/NODE",
                    "PROCUREMENT",
                    "PRICE/H",
                    "REGION",
                ],
                &rows,
            );
        }
        "Team" => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    let owners = v
                        .spec
                        .get("owners")
                        .and_then(|o| o.as_array())
                        .map(|a| a.iter().map(short).collect::<Vec<_>>().join(","))
                        .unwrap_or_default();
                    vec![
                        v.metadata.name.clone(),
                        s(v, "displayName"),
                        dash(Some(&owners)),
                        s(v, "costCenter"),
                        v.status.generation.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "NAME",
                    "DISPLAY NAME",
                    "OWNERS",
                    "COST CENTER",
                    "GENERATION",
                ],
                &rows,
            );
        }
        "Queue" => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    let quotas = v
                        .spec
                        .get("quotas")
                        .and_then(|o| o.as_array())
                        .map(|a| {
                            a.iter()
                                .map(|q| format!("{}={}", short(&q["pool"]), short(&q["gpus"])))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![
                        v.metadata.name.clone(),
                        s(v, "team"),
                        s(v, "cohort"),
                        s(v, "priority"),
                        dash(Some(&quotas)),
                    ]
                })
                .collect();
            table(&["NAME", "TEAM", "COHORT", "PRIORITY", "GPU QUOTAS"], &rows);
        }
        _ => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    vec![
                        v.metadata.name.clone(),
                        v.kind.clone(),
                        dash(v.status.team.as_deref()),
                        v.status.generation.to_string(),
                        v.status.updated_at.clone(),
                    ]
                })
                .collect();
            table(&["NAME", "KIND", "TEAM", "GENERATION", "UPDATED"], &rows);
        }
    }
}

/// Budgets print with their spend and forecast (`plinth get budgets`, `plinth describe budget`).
fn is_budget(kind: &str) -> bool {
    plinth_config::kinds::lookup_kind(kind)
        .is_some_and(|k| k.name == plinth_config::kinds::BUDGET_KIND)
}

pub async fn describe(conn: Conn, kind: String, name: String) -> CmdResult {
    if is_budget(&kind) && conn.output == Format::Table {
        return crate::cost::get_budgets(&conn, Some(&name)).await;
    }
    let client = Client::new(&conn);
    let v: ResourceView = client
        .get(&format!(
            "/api/v1/resources/{}/{}",
            kind_path(&kind),
            enc(&name)
        ))
        .await?;
    // Recent events, when the caller may read the audit log.
    let events: Vec<AuditEvent> = client
        .get(&format!(
            "/api/v1/audit?kind={}&name={}&limit=1000",
            enc(&v.kind),
            enc(&name)
        ))
        .await
        .unwrap_or_default();
    if conn.output != Format::Table {
        emit(
            conn.output,
            &serde_json::json!({"resource": v, "events": events}),
            |_| {},
        );
        return Ok(0);
    }
    println!("Name:        {}", v.metadata.name);
    println!("Kind:        {}", v.kind);
    println!("Team:        {}", dash(v.status.team.as_deref()));
    println!("Generation:  {}", v.status.generation);
    println!("Created:     {}", v.status.created_at);
    println!(
        "Updated:     {} by {}",
        v.status.updated_at, v.status.updated_by
    );
    println!("Digest:      {}", v.status.digest);
    if !v.metadata.labels.is_empty() {
        println!("Labels:");
        for (k, val) in &v.metadata.labels {
            println!("  {k}={val}");
        }
    }
    println!("Spec:");
    let spec = yaml_serde::to_string(&v.spec).unwrap_or_default();
    for line in spec.lines() {
        println!("  {line}");
    }
    if !events.is_empty() {
        println!("Events:");
        for e in events.iter().rev().take(10) {
            println!("  #{} {} {} by {}", e.seq, e.ts, e.action, e.actor);
        }
    }
    Ok(0)
}

pub async fn delete(conn: Conn, kind: String, name: String, dry_run: bool) -> CmdResult {
    let path = format!(
        "/api/v1/resources/{}/{}{}",
        kind_path(&kind),
        enc(&name),
        if dry_run { "?dry_run=true" } else { "" }
    );
    let r: DeleteResponse = Client::new(&conn).delete(&path).await?;
    emit(conn.output, &r, |r| {
        let suffix = if r.dry_run { " (dry run)" } else { "" };
        println!("{}/{} deleted{suffix}", r.kind.to_ascii_lowercase(), r.name);
    });
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; its secret is printed once.
    Create {
        #[arg(long)]
        team: Option<String>,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Who or what will use it.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List tokens (maintainers: their team's; admins: all).
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token by id; it stops working on the next request.
    Revoke {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s)
        .ok_or_else(|| format!("unknown role {s:?}; use viewer, member, maintainer or admin"))
}

pub async fn token(cmd: TokenCmd) -> CmdResult {
    match cmd {
        TokenCmd::Create {
            team,
            role,
            name,
            conn,
        } => {
            let created: CreatedToken = Client::new(&conn)
                .post("/api/v1/tokens", &CreateTokenRequest { name, team, role })
                .await?;
            emit(conn.output, &created, |c| {
                println!(
                    "token {} created for team {} with role {}",
                    c.info.id,
                    dash(c.info.team.as_deref()),
                    c.info.role
                );
                println!("{}", c.token);
                eprintln!("store it now: it is not shown again");
            });
        }
        TokenCmd::List { conn } => {
            let list: Vec<TokenInfo> = Client::new(&conn).get("/api/v1/tokens").await?;
            emit(conn.output, &list, |l| {
                let rows: Vec<Vec<String>> = l
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            dash(t.team.as_deref()),
                            t.role.to_string(),
                            t.created_at.clone(),
                            dash(t.revoked_at.as_deref()),
                        ]
                    })
                    .collect();
                table(&["ID", "NAME", "TEAM", "ROLE", "CREATED", "REVOKED"], &rows);
            });
        }
        TokenCmd::Revoke { id, conn } => {
            let t: TokenInfo = Client::new(&conn)
                .delete(&format!("/api/v1/tokens/{}", enc(&id)))
                .await?;
            emit(conn.output, &t, |t| {
                println!(
                    "token {} revoked at {}",
                    t.id,
                    dash(t.revoked_at.as_deref())
                )
            });
        }
    }
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    Log {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// RFC 3339 time, e.g. 2026-11-28T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        after_seq: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check the hash chain; exits 8 and names the first bad event if it was tampered with.
    Verify {
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn audit(cmd: AuditCmd) -> CmdResult {
    match cmd {
        AuditCmd::Log {
            actor,
            action,
            kind,
            name,
            team,
            since,
            until,
            after_seq,
            limit,
            conn,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("actor", actor),
                ("action", action),
                ("kind", kind),
                ("name", name),
                ("team", team),
                ("since", since),
                ("until", until),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            if let Some(s) = after_seq {
                q.push(format!("after_seq={s}"));
            }
            let events: Vec<AuditEvent> = Client::new(&conn)
                .get(&format!("/api/v1/audit?{}", q.join("&")))
                .await?;
            emit(conn.output, &events, |ev| {
                let rows: Vec<Vec<String>> = ev
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            e.ts.clone(),
                            e.actor.clone(),
                            e.action.clone(),
                            format!("{}/{}", e.kind, e.name),
                            dash(e.team.as_deref()),
                        ]
                    })
                    .collect();
                table(&["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "TEAM"], &rows);
            });
        }
        AuditCmd::Verify { conn } => {
            let v: AuditVerification = Client::new(&conn)
                .post("/api/v1/audit/verify", &serde_json::json!({}))
                .await?;
            emit(conn.output, &v, |v| match &v.first_bad {
                None => println!("audit log intact: {} events verified", v.checked),
                Some(b) => println!(
                    "audit log TAMPERED: first bad event {}: {} ({} events verified before it)",
                    b.seq, b.reason, v.checked
                ),
            });
            if !v.ok {
                return Ok(8);
            }
        }
    }
    Ok(0)
}
