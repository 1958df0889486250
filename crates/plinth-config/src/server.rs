//! `plinth serve` configuration: defaults < config file < `PLINTH_*` environment < flags.
//! The environment is passed in as a map so tests need not touch the process environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    Read { path: String, message: String },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The config file (YAML). Every field is optional; unknown fields are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    max_body_bytes: Option<u64>,
    max_upload_bytes: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
    gateway_listen: Option<String>,
    cost: Option<CostFileConfig>,
    registry: Option<RegistryFileConfig>,
    otlp_endpoint: Option<String>,
    gateway_upstream_ca_file: Option<PathBuf>,
    gateway_limits_redis: Option<String>,
    replica_usage_interval: Option<String>,
}

/// The `cost:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CostFileConfig {
    approval_threshold: Option<f64>,
    webhook_ca_file: Option<PathBuf>,
}

/// The `registry:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFileConfig {
    archived_artifact_retention: Option<String>,
}

/// Values given as command-line flags; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct ServerOverrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub max_upload_bytes: Option<u64>,
    /// `local` or `simulated` (`--executor`).
    pub executor: Option<String>,
    /// Random spot interruptions per spot node per hour (`--chaos-spot-interrupt-rate`).
    pub chaos_spot_interrupt_rate: Option<f64>,
    /// Seed of the chaos interruptions (`--chaos-seed`).
    pub chaos_seed: Option<u64>,
    /// Address of the inference gateway, or `off` (`--gateway-listen`, `--no-gateway`).
    pub gateway_listen: Option<String>,
    /// Jobs estimated above this amount wait for approval (`--cost-approval-threshold`).
    pub cost_approval_threshold: Option<f64>,
    /// PEM file of CA certificates trusted for https budget webhooks
    /// (`--cost-webhook-ca-file`).
    pub cost_webhook_ca_file: Option<PathBuf>,
    /// OTLP/HTTP endpoint the gateway exports request spans to (`--otlp-endpoint`).
    pub otlp_endpoint: Option<String>,
    /// PEM file of CA certificates the gateway trusts for https upstreams
    /// (`--gateway-upstream-ca-file`).
    pub gateway_upstream_ca_file: Option<PathBuf>,
    /// Redis URL the gateway shares its limit windows through (`--gateway-limits-redis`).
    pub gateway_limits_redis: Option<String>,
}

/// What runs a job's admitted attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutorKind {
    /// Real processes under the supervisor (`plinth exec-supervisor`).
    #[default]
    Local,
    /// Benchmark only: an attempt holds its admitted resources for the job's
    /// `simulatedRuntime`, then ends as completed; no process is started.
    Simulated,
}

/// The validated server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://<data_dir>/plinth.db` unless a database URL was given.
    pub database_url: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_body_bytes: usize,
    /// The largest dataset upload (`POST /api/v1/datacontracts/{name}/versions/upload`), which
    /// is streamed to disk rather than held in memory.
    pub max_upload_bytes: u64,
    pub shutdown_grace_seconds: u64,
    /// The first admin token, supplied instead of generating one (`PLINTH_BOOTSTRAP_TOKEN`).
    pub bootstrap_token: Option<String>,
    pub executor: ExecutorKind,
    /// Random spot interruptions per spot node per hour; 0 for none (chaos tests only).
    pub chaos_spot_interrupts_per_hour: f64,
    /// Seed of the chaos interruptions; `None` picks one from the clock.
    pub chaos_seed: Option<u64>,
    /// The inference gateway's own listener (OpenAI-compatible API); `None` when turned off.
    pub gateway_listen: Option<SocketAddr>,
    /// Whether the gateway address was configured (then failing to listen there stops the
    /// server); the default address is given up with a warning when it is taken.
    pub gateway_listen_configured: bool,
    /// Jobs whose cost estimate is above this amount (in the pools' currency) wait for a
    /// maintainer's approval whatever the budgets say; `None`: only budgets ask for approval.
    pub cost_approval_threshold: Option<f64>,
    /// CA certificates (PEM) trusted for `https://` budget webhooks besides the system's.
    pub cost_webhook_ca_file: Option<PathBuf>,
    /// OTLP/HTTP base endpoint for the gateway's request spans (`--otlp-endpoint`, then the config
    /// file's `otlp_endpoint`); without one the standard `OTEL_EXPORTER_OTLP_*` variables in
    /// `otel_env` apply.
    pub otlp_endpoint: Option<String>,
    /// The `OTEL_*` environment variables, for the OTLP exporter.
    pub otel_env: BTreeMap<String, String>,
    /// PEM file of CA certificates trusted for the gateway's https upstreams besides the
    /// system's roots (`--gateway-upstream-ca-file`, `PLINTH_GATEWAY_UPSTREAM_CA_FILE`, the config
    /// file's `gateway_upstream_ca_file`).
    pub gateway_upstream_ca_file: Option<PathBuf>,
    /// Redis the gateway shares its limit windows through with other gateways, instead of
    /// PostgreSQL or this process (`--gateway-limits-redis`, `PLINTH_GATEWAY_LIMITS_REDIS`, the
    /// config file's `gateway_limits_redis`). Its `Debug` hides the password.
    pub gateway_limits_redis: Option<plinth_gateway::limits_redis::RedisUrl>,
    /// How long the artifacts of archived (or deprecated past their sunset) model versions are
    /// kept before the server deletes them (`PLINTH_REGISTRY_ARCHIVED_ARTIFACT_RETENTION`, the
    /// config file's `registry.archived_artifact_retention`, e.g. `30d`); `None`: kept.
    pub archived_artifact_retention: Option<std::time::Duration>,
    /// How often a running local replica's usage so far is written as a usage row (so its
    /// serving cost shows while it runs); `PLINTH_REPLICA_USAGE_INTERVAL`, the config file's
    /// `replica_usage_interval`; default one minute, at least one second.
    pub replica_usage_interval: std::time::Duration,
}

pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:7879";
pub const DEFAULT_REPLICA_USAGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
pub const DEFAULT_DATA_DIR: &str = "./plinth-data";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;

impl ServerConfig {
    /// Resolves the configuration from flags, environment and the config file named by
    /// `--config` or `PLINTH_CONFIG`.
    pub fn load(
        env: &BTreeMap<String, String>,
        flags: ServerOverrides,
    ) -> Result<Self, ConfigError> {
        let file_path = flags
            .config_file
            .clone()
            .or_else(|| env.get("PLINTH_CONFIG").map(PathBuf::from));
        let file = match &file_path {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let file_name = file_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        // Pick the value and remember where it came from, for error messages.
        fn pick<T: Clone>(
            flag: Option<T>,
            env: Option<T>,
            file: Option<T>,
            names: (&str, &str, &str),
        ) -> (Option<T>, String) {
            if let Some(v) = flag {
                return (Some(v), names.0.to_string());
            }
            if let Some(v) = env {
                return (Some(v), names.1.to_string());
            }
            (file, names.2.to_string())
        }
        let e = |k: &str| env.get(k).cloned().filter(|v| !v.is_empty());
        let cfg_field = |f: &str| format!("config file {file_name}: {f}");

        let (listen, src) = pick(
            flags.listen,
            e("PLINTH_LISTEN"),
            file.listen,
            ("--listen", "PLINTH_LISTEN", &cfg_field("listen")),
        );
        let listen_text = listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Invalid {
            source_name: src,
            message: format!("{listen_text:?} is not an address such as 127.0.0.1:7878"),
        })?;

        let (gateway, src) = pick(
            flags.gateway_listen,
            e("PLINTH_GATEWAY_LISTEN"),
            file.gateway_listen,
            (
                "--gateway-listen",
                "PLINTH_GATEWAY_LISTEN",
                &cfg_field("gateway_listen"),
            ),
        );
        let gateway_listen_configured = gateway.is_some();
        let gateway_listen = match gateway.as_deref() {
            Some("off") => None,
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        source_name: src,
                        message: format!(
                            "{text:?} is not an address such as 127.0.0.1:7879 (or off)"
                        ),
                    })?,
            ),
            None => DEFAULT_GATEWAY_LISTEN.parse().ok(),
        };

        let (data_dir, _) = pick(
            flags.data_dir,
            e("PLINTH_DATA_DIR").map(PathBuf::from),
            file.data_dir,
            ("", "", ""),
        );
        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let (database_url, src) = pick(
            flags.database_url,
            e("PLINTH_DATABASE_URL"),
            file.database_url,
            (
                "--database-url",
                "PLINTH_DATABASE_URL",
                &cfg_field("database_url"),
            ),
        );
        let database_url = match database_url {
            Some(u)
                if u.starts_with("sqlite:")
                    || u.starts_with("postgres://")
                    || u.starts_with("postgresql://") =>
            {
                u
            }
            Some(_) => {
                return Err(ConfigError::Invalid {
                    source_name: src,
                    message: "must start with sqlite:, postgres:// or postgresql://".into(),
                });
            }
            None => format!("sqlite://{}", data_dir.join("plinth.db").display()),
        };

        let (log_format, src) = pick(
            flags.log_format,
            e("PLINTH_LOG_FORMAT"),
            file.log_format,
            (
                "--log-format",
                "PLINTH_LOG_FORMAT",
                &cfg_field("log_format"),
            ),
        );
        let log_format = match log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    source_name: src,
                    message: format!("unknown log format {other:?}; use text or json"),
                });
            }
        };
        let (log_level, _) = pick(
            flags.log_level,
            e("PLINTH_LOG"),
            file.log_level,
            ("", "", ""),
        );
        let log_level = log_level.unwrap_or_else(|| "info".to_string());

        let env_body = match e("PLINTH_MAX_BODY_BYTES") {
            Some(v) => Some(v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                source_name: "PLINTH_MAX_BODY_BYTES".into(),
                message: format!("{v:?} is not a number of bytes"),
            })?),
            None => None,
        };
        let max_body_bytes = env_body
            .or(file.max_body_bytes)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                source_name: "max_body_bytes".into(),
                message: format!("{max_body_bytes} is too small; use at least 1024"),
            });
        }
        let env_upload = match e("PLINTH_MAX_UPLOAD_BYTES") {
            Some(v) => Some(v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                source_name: "PLINTH_MAX_UPLOAD_BYTES".into(),
                message: format!("{v:?} is not a number of bytes"),
            })?),
            None => None,
        };
        let (max_upload_bytes, src) = pick(
            flags.max_upload_bytes,
            env_upload,
            file.max_upload_bytes,
            (
                "--max-upload-bytes",
                "PLINTH_MAX_UPLOAD_BYTES",
                &cfg_field("max_upload_bytes"),
            ),
        );
        let max_upload_bytes = max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD_BYTES);
        if max_upload_bytes < 1024 {
            return Err(ConfigError::Invalid {
                source_name: src,
                message: format!("{max_upload_bytes} is too small; use at least 1024"),
            });
        }
        let (executor, src) = pick(
            flags.executor,
            e("PLINTH_EXECUTOR"),
            None,
            ("--executor", "PLINTH_EXECUTOR", ""),
        );
        let executor = match executor.as_deref() {
            None | Some("local") => ExecutorKind::Local,
            Some("simulated") => ExecutorKind::Simulated,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    source_name: src,
                    message: format!("unknown executor {other:?}; use local or simulated"),
                });
            }
        };
        let env_rate = match e("PLINTH_CHAOS_SPOT_INTERRUPT_RATE") {
            Some(v) => Some(v.parse::<f64>().map_err(|_| ConfigError::Invalid {
                source_name: "PLINTH_CHAOS_SPOT_INTERRUPT_RATE".into(),
                message: format!("{v:?} is not a number of interruptions per hour"),
            })?),
            None => None,
        };
        let (rate, src) = pick(
            flags.chaos_spot_interrupt_rate,
            env_rate,
            None,
            (
                "--chaos-spot-interrupt-rate",
                "PLINTH_CHAOS_SPOT_INTERRUPT_RATE",
                "",
            ),
        );
        let rate = rate.unwrap_or(0.0);
        if !rate.is_finite() || !(0.0..=3_600_000.0).contains(&rate) {
            return Err(ConfigError::Invalid {
                source_name: src,
                message: format!(
                    "{rate} must be between 0 and 3600000 interruptions per node per hour"
                ),
            });
        }
        let env_seed = match e("PLINTH_CHAOS_SEED") {
            Some(v) => Some(v.parse::<u64>().map_err(|_| ConfigError::Invalid {
                source_name: "PLINTH_CHAOS_SEED".into(),
                message: format!("{v:?} is not a whole number"),
            })?),
            None => None,
        };
        let chaos_seed = flags.chaos_seed.or(env_seed);
        let cost = file.cost.unwrap_or_default();
        let env_threshold = match e("PLINTH_COST_APPROVAL_THRESHOLD") {
            Some(v) => Some(v.trim().parse::<f64>().map_err(|_| ConfigError::Invalid {
                source_name: "PLINTH_COST_APPROVAL_THRESHOLD".into(),
                message: format!("{v:?} is not an amount"),
            })?),
            None => None,
        };
        let (cost_approval_threshold, src) = pick(
            flags.cost_approval_threshold,
            env_threshold,
            cost.approval_threshold,
            (
                "--cost-approval-threshold",
                "PLINTH_COST_APPROVAL_THRESHOLD",
                &cfg_field("cost.approval_threshold"),
            ),
        );
        if let Some(t) = cost_approval_threshold
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(ConfigError::Invalid {
                source_name: src,
                message: format!("{t} is not an amount >= 0"),
            });
        }
        let (cost_webhook_ca_file, _) = pick(
            flags.cost_webhook_ca_file,
            e("PLINTH_COST_WEBHOOK_CA_FILE").map(PathBuf::from),
            cost.webhook_ca_file,
            ("", "", ""),
        );
        let (otlp_endpoint, src) = pick(
            flags.otlp_endpoint,
            None,
            file.otlp_endpoint,
            ("--otlp-endpoint", "", &cfg_field("otlp_endpoint")),
        );
        if let Some(url) = &otlp_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                source_name: src,
                message: format!(
                    "{url:?} is not an http:// or https:// URL such as http://127.0.0.1:4318"
                ),
            });
        }
        let (gateway_upstream_ca_file, _) = pick(
            flags.gateway_upstream_ca_file,
            e("PLINTH_GATEWAY_UPSTREAM_CA_FILE").map(PathBuf::from),
            file.gateway_upstream_ca_file,
            ("", "", ""),
        );
        let (limits_redis, src) = pick(
            flags.gateway_limits_redis,
            e("PLINTH_GATEWAY_LIMITS_REDIS"),
            file.gateway_limits_redis,
            (
                "--gateway-limits-redis",
                "PLINTH_GATEWAY_LIMITS_REDIS",
                &cfg_field("gateway_limits_redis"),
            ),
        );
        let gateway_limits_redis = match limits_redis {
            Some(url) => Some(plinth_gateway::limits_redis::RedisUrl::parse(&url).map_err(
                |message| ConfigError::Invalid {
                    source_name: src,
                    message,
                },
            )?),
            None => None,
        };
        let (retention, src) = pick(
            None,
            e("PLINTH_REGISTRY_ARCHIVED_ARTIFACT_RETENTION"),
            file.registry.and_then(|r| r.archived_artifact_retention),
            (
                "",
                "PLINTH_REGISTRY_ARCHIVED_ARTIFACT_RETENTION",
                &cfg_field("registry.archived_artifact_retention"),
            ),
        );
        let archived_artifact_retention = match retention.as_deref() {
            None | Some("off") => None,
            Some(text) => Some(plinth_types::job::parse_duration(text).map_err(|message| {
                ConfigError::Invalid {
                    source_name: src,
                    message,
                }
            })?),
        };
        let (interval, src) = pick(
            None,
            e("PLINTH_REPLICA_USAGE_INTERVAL"),
            file.replica_usage_interval,
            (
                "",
                "PLINTH_REPLICA_USAGE_INTERVAL",
                &cfg_field("replica_usage_interval"),
            ),
        );
        let replica_usage_interval = match interval.as_deref() {
            None => DEFAULT_REPLICA_USAGE_INTERVAL,
            Some(text) => match plinth_types::job::parse_duration(text) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => d,
                Ok(_) => {
                    return Err(ConfigError::Invalid {
                        source_name: src,
                        message: format!("{text:?} is shorter than the least interval, 1s"),
                    });
                }
                Err(message) => {
                    return Err(ConfigError::Invalid {
                        source_name: src,
                        message,
                    });
                }
            },
        };
        let otel_env = env
            .iter()
            .filter(|(k, _)| k.starts_with("OTEL_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(ServerConfig {
            listen,
            data_dir,
            database_url,
            log_format,
            log_level,
            max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
            max_upload_bytes,
            shutdown_grace_seconds: file.shutdown_grace_seconds.unwrap_or(10),
            bootstrap_token: e("PLINTH_BOOTSTRAP_TOKEN"),
            executor,
            chaos_spot_interrupts_per_hour: rate,
            chaos_seed,
            gateway_listen,
            gateway_listen_configured,
            cost_approval_threshold,
            cost_webhook_ca_file,
            otlp_endpoint,
            otel_env,
            gateway_upstream_ca_file,
            gateway_limits_redis,
            archived_artifact_retention,
            replica_usage_interval,
        })
    }
}

fn read_file(p: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
        path: p.display().to_string(),
        message: e.to_string(),
    })?;
    yaml_serde::from_str::<Option<FileConfig>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|e| ConfigError::Parse {
            path: p.display().to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = ServerConfig::load(&env(&[]), ServerOverrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(c.database_url, "sqlite://./plinth-data/plinth.db");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.max_upload_bytes, DEFAULT_MAX_UPLOAD_BYTES);
    }

    #[test]
    fn executor_and_chaos_from_flag_or_env() {
        let c = ServerConfig::load(&env(&[]), ServerOverrides::default()).unwrap();
        assert_eq!(c.executor, ExecutorKind::Local);
        assert_eq!(c.chaos_spot_interrupts_per_hour, 0.0);
        let e = env(&[
            ("PLINTH_EXECUTOR", "simulated"),
            ("PLINTH_CHAOS_SPOT_INTERRUPT_RATE", "12.5"),
            ("PLINTH_CHAOS_SEED", "7"),
        ]);
        let c = ServerConfig::load(&e, ServerOverrides::default()).unwrap();
        assert_eq!(c.executor, ExecutorKind::Simulated);
        assert_eq!(c.chaos_spot_interrupts_per_hour, 12.5);
        assert_eq!(c.chaos_seed, Some(7));
        let flags = ServerOverrides {
            executor: Some("local".into()),
            chaos_spot_interrupt_rate: Some(60.0),
            ..Default::default()
        };
        let c = ServerConfig::load(&e, flags).unwrap();
        assert_eq!(c.executor, ExecutorKind::Local);
        assert_eq!(c.chaos_spot_interrupts_per_hour, 60.0);
        let bad = ServerOverrides {
            executor: Some("slurm".into()),
            ..Default::default()
        };
        let err = ServerConfig::load(&env(&[]), bad).unwrap_err().to_string();
        assert!(
            err.starts_with("--executor: unknown executor \"slurm\""),
            "{err}"
        );
        let bad = ServerOverrides {
            chaos_spot_interrupt_rate: Some(-1.0),
            ..Default::default()
        };
        let err = ServerConfig::load(&env(&[]), bad).unwrap_err().to_string();
        assert!(
            err.starts_with("--chaos-spot-interrupt-rate: -1 must be"),
            "{err}"
        );
        let err = ServerConfig::load(
            &env(&[("PLINTH_CHAOS_SPOT_INTERRUPT_RATE", "often")]),
            ServerOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("PLINTH_CHAOS_SPOT_INTERRUPT_RATE"), "{err}");
    }

    #[test]
    fn gateway_listen_defaults_can_be_set_or_turned_off() {
        let c = ServerConfig::load(&env(&[]), ServerOverrides::default()).unwrap();
        assert_eq!(c.gateway_listen.map(|a| a.port()), Some(7879));
        assert!(!c.gateway_listen_configured);
        let c = ServerConfig::load(
            &env(&[("PLINTH_GATEWAY_LISTEN", "off")]),
            Default::default(),
        )
        .unwrap();
        assert_eq!(c.gateway_listen, None);
        let flags = ServerOverrides {
            gateway_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = ServerConfig::load(&env(&[("PLINTH_GATEWAY_LISTEN", "off")]), flags).unwrap();
        assert_eq!(c.gateway_listen.map(|a| a.port()), Some(0));
        assert!(c.gateway_listen_configured);
        let err = ServerConfig::load(
            &env(&[("PLINTH_GATEWAY_LISTEN", "7879")]),
            Default::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PLINTH_GATEWAY_LISTEN: \"7879\" is not an address"),
            "{err}"
        );
    }

    #[test]
    fn upload_limit_from_flag_env_or_file() {
        let dir = tempfile_dir();
        let f = dir.join("plinth.yaml");
        std::fs::write(&f, "max_upload_bytes: 4096\n").unwrap();
        let e = env(&[("PLINTH_CONFIG", f.to_str().unwrap())]);
        let c = ServerConfig::load(&e, ServerOverrides::default()).unwrap();
        assert_eq!(c.max_upload_bytes, 4096);
        let e2 = env(&[
            ("PLINTH_CONFIG", f.to_str().unwrap()),
            ("PLINTH_MAX_UPLOAD_BYTES", "8192"),
        ]);
        let c = ServerConfig::load(&e2, ServerOverrides::default()).unwrap();
        assert_eq!(c.max_upload_bytes, 8192);
        let flags = ServerOverrides {
            max_upload_bytes: Some(2048),
            ..Default::default()
        };
        assert_eq!(
            ServerConfig::load(&e2, flags).unwrap().max_upload_bytes,
            2048
        );
        let err = ServerConfig::load(
            &env(&[("PLINTH_MAX_UPLOAD_BYTES", "lots")]),
            ServerOverrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PLINTH_MAX_UPLOAD_BYTES: \"lots\" is not a number of bytes"
        );
        let flags = ServerOverrides {
            max_upload_bytes: Some(10),
            ..Default::default()
        };
        let err = ServerConfig::load(&env(&[]), flags).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--max-upload-bytes: 10 is too small"),
            "{err}"
        );
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile_dir();
        let f = dir.join("plinth.yaml");
        std::fs::write(
            &f,
            "listen: 127.0.0.1:1\nlog_format: json\nmax_body_bytes: 2048\n",
        )
        .unwrap();
        let e = env(&[
            ("PLINTH_CONFIG", f.to_str().unwrap()),
            ("PLINTH_LISTEN", "127.0.0.1:2"),
        ]);
        let c = ServerConfig::load(&e, ServerOverrides::default()).unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_body_bytes, 2048);
        let flags = ServerOverrides {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        assert_eq!(ServerConfig::load(&e, flags).unwrap().listen.port(), 3);
    }

    #[test]
    fn gateway_limits_redis_from_flag_env_or_file_and_bad_urls_name_their_source() {
        let c = ServerConfig::load(&env(&[]), ServerOverrides::default()).unwrap();
        assert_eq!(c.gateway_limits_redis, None);
        let dir = tempfile_dir();
        let f = dir.join("redis.yaml");
        std::fs::write(&f, "gateway_limits_redis: redis://file-host:6380/2\n").unwrap();
        let with_file = |pairs: &[(&str, &str)]| {
            let mut e = env(pairs);
            e.insert("PLINTH_CONFIG".into(), f.display().to_string());
            e
        };
        let host = |c: ServerConfig| {
            c.gateway_limits_redis
                .map(|u| u.to_string())
                .unwrap_or_default()
        };
        let c = ServerConfig::load(&with_file(&[]), ServerOverrides::default()).unwrap();
        assert_eq!(host(c), "redis://file-host:6380/2");
        let e = with_file(&[("PLINTH_GATEWAY_LIMITS_REDIS", "redis://:pw@env-host")]);
        let c = ServerConfig::load(&e, ServerOverrides::default()).unwrap();
        assert!(c.gateway_limits_redis.as_ref().unwrap().has_password());
        assert!(!format!("{c:?}").contains(":pw@"), "{c:?}");
        assert_eq!(host(c), "redis://env-host:6379/0");
        let flags = ServerOverrides {
            gateway_limits_redis: Some("redis://flag-host:1".into()),
            ..Default::default()
        };
        let c = ServerConfig::load(&e, flags).unwrap();
        assert_eq!(host(c), "redis://flag-host:1/0");
        // A bad URL names where it came from, and never shows the password.
        let flags = ServerOverrides {
            gateway_limits_redis: Some("redis://:hunter2@host:port".into()),
            ..Default::default()
        };
        let err = ServerConfig::load(&env(&[]), flags)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--gateway-limits-redis: Redis URL `redis://***@host:port`: port `port` is not a number from 1 to 65535"
        );
        let err = ServerConfig::load(
            &env(&[("PLINTH_GATEWAY_LIMITS_REDIS", "localhost:6379")]),
            ServerOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("PLINTH_GATEWAY_LIMITS_REDIS: Redis URL"),
            "{err}"
        );
        std::fs::write(&f, "gateway_limits_redis: rediss://host\n").unwrap();
        let err = ServerConfig::load(&with_file(&[]), ServerOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(": gateway_limits_redis: Redis URL"), "{err}");
        assert!(err.contains("TLS (rediss://) is not supported"), "{err}");
    }

    #[test]
    fn cost_approval_threshold_from_flag_env_or_file() {
        let dir = tempfile_dir();
        let f = dir.join("cost.yaml");
        std::fs::write(
            &f,
            "cost:\n  approval_threshold: 250\n  webhook_ca_file: /etc/plinth/ca.pem\n",
        )
        .unwrap();
        let e = env(&[("PLINTH_CONFIG", f.to_str().unwrap())]);
        let c = ServerConfig::load(&e, ServerOverrides::default()).unwrap();
        assert_eq!(c.cost_approval_threshold, Some(250.0));
        assert_eq!(
            c.cost_webhook_ca_file.as_deref(),
            Some(Path::new("/etc/plinth/ca.pem"))
        );
        let e = env(&[
            ("PLINTH_CONFIG", f.to_str().unwrap()),
            ("PLINTH_COST_APPROVAL_THRESHOLD", "100.5"),
        ]);
        let c = ServerConfig::load(&e, ServerOverrides::default()).unwrap();
        assert_eq!(c.cost_approval_threshold, Some(100.5));
        let flags = ServerOverrides {
            cost_approval_threshold: Some(7.0),
            ..Default::default()
        };
        assert_eq!(
            ServerConfig::load(&e, flags)
                .unwrap()
                .cost_approval_threshold,
            Some(7.0)
        );
        assert_eq!(
            ServerConfig::load(&env(&[]), ServerOverrides::default())
                .unwrap()
                .cost_approval_threshold,
            None
        );
        let err = ServerConfig::load(
            &env(&[("PLINTH_COST_APPROVAL_THRESHOLD", "lots")]),
            ServerOverrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PLINTH_COST_APPROVAL_THRESHOLD: \"lots\" is not an amount"
        );
        std::fs::write(&f, "cost:\n  approval_threshold: -3\n").unwrap();
        let e = env(&[("PLINTH_CONFIG", f.to_str().unwrap())]);
        let err = ServerConfig::load(&e, ServerOverrides::default()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("cost.approval_threshold: -3 is not an amount >= 0"),
            "{err}"
        );
        std::fs::write(&f, "cost:\n  approval: 3\n").unwrap();
        let err = ServerConfig::load(&e, ServerOverrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `approval`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = ServerConfig::load(
            &env(&[("PLINTH_LISTEN", "nowhere")]),
            ServerOverrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PLINTH_LISTEN: \"nowhere\" is not an address such as 127.0.0.1:7878"
        );
        let err = ServerConfig::load(
            &env(&[("PLINTH_DATABASE_URL", "mysql://x")]),
            ServerOverrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PLINTH_DATABASE_URL: must start with"),
            "{err}"
        );
        let dir = tempfile_dir();
        let f = dir.join("c.yaml");
        std::fs::write(&f, "lisen: x\n").unwrap();
        let flags = ServerOverrides {
            config_file: Some(f),
            ..Default::default()
        };
        let err = ServerConfig::load(&env(&[]), flags).unwrap_err();
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "plinth-config-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
}
