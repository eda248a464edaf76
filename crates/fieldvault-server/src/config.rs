//! Configuration: one typed [`Config`], filled from defaults < `fieldvault.toml` < `FIELDVAULT_*`
//! environment variables < command-line flags, and nothing else.
//!
//! Every option is declared once in [`OPTIONS`] with its documentation. The same table parses all
//! three sources (an unknown key is an error wherever it comes from), renders
//! `docs/configuration.md` (`fieldvault config reference`; a test keeps the file in step) and
//! drives `fieldvault config show`, which prints secrets as `[redacted]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fieldvault_crypto::SecretString;
use ipnet::IpNet;

/// One documented option.
pub struct OptionDoc {
    /// Dotted key as written in `fieldvault.toml` (`tls.cert`).
    pub key: &'static str,
    /// Default, as text (`-` when unset).
    pub default: &'static str,
    /// True for values that `config show` must redact.
    pub secret: bool,
    /// What it means, with its unit.
    pub doc: &'static str,
}

impl OptionDoc {
    /// The environment variable: `FIELDVAULT_` + key upper-cased, dots as underscores.
    pub fn env(&self) -> String {
        format!("FIELDVAULT_{}", self.key.replace('.', "_").to_uppercase())
    }
}

/// Every option, in the order the reference lists them.
pub const OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        key: "data_dir",
        default: "./fieldvault-data",
        secret: false,
        doc: "Directory for the embedded database, encrypted blobs and the master key file. Created with mode 0700 on first start. Flag: `--data-dir`.",
    },
    OptionDoc {
        key: "listen",
        default: "127.0.0.1:8080",
        secret: false,
        doc: "Address and port to serve HTTP (or HTTPS when `tls.cert` is set) on. Flag: `--listen`.",
    },
    OptionDoc {
        key: "database_url",
        default: "-",
        secret: true,
        doc: "`postgres://user:password@host:port/db` switches the store from the embedded SQLCipher database to PostgreSQL (for several instances).",
    },
    OptionDoc {
        key: "database_max_connections",
        default: "16",
        secret: false,
        doc: "Size of the database connection pool.",
    },
    OptionDoc {
        key: "blob_store",
        default: "-",
        secret: false,
        doc: "`s3://bucket/prefix` stores attachments and other blobs in an S3-compatible bucket (configure `s3.*`). Unset: `<data_dir>/blobs`.",
    },
    OptionDoc {
        key: "s3.endpoint",
        default: "-",
        secret: false,
        doc: "Endpoint URL of a non-AWS S3-compatible server (MinIO, Garage, Ceph…). Unset: AWS.",
    },
    OptionDoc {
        key: "s3.region",
        default: "us-east-1",
        secret: false,
        doc: "S3 region.",
    },
    OptionDoc {
        key: "s3.access_key_id",
        default: "-",
        secret: false,
        doc: "S3 access key id.",
    },
    OptionDoc {
        key: "s3.secret_access_key",
        default: "-",
        secret: true,
        doc: "S3 secret access key.",
    },
    OptionDoc {
        key: "s3.allow_http",
        default: "false",
        secret: false,
        doc: "Allow a plain `http://` S3 endpoint (only on loopback or a private network).",
    },
    OptionDoc {
        key: "master_key",
        default: "-",
        secret: true,
        doc: "The master key itself, base64 (32 bytes). Meant for `FIELDVAULT_MASTER_KEY` from a secret manager; takes precedence over the key file.",
    },
    OptionDoc {
        key: "master_key_file",
        default: "<data_dir>/master.key",
        secret: false,
        doc: "Master key file (base64, mode 0600; generated on first start). Keep an escrow copy: without it the data cannot be read.",
    },
    OptionDoc {
        key: "master_key_source",
        default: "file",
        secret: false,
        doc: "`file` (the key file or `master_key`), or `passphrase`: derive the master key with Argon2id from a passphrase asked at start (`--master-passphrase-stdin` reads it from standard input).",
    },
    OptionDoc {
        key: "tls.cert",
        default: "-",
        secret: false,
        doc: "PEM certificate chain. With `tls.key`, Fieldvault serves HTTPS itself (rustls) and reloads both files on SIGHUP.",
    },
    OptionDoc {
        key: "tls.key",
        default: "-",
        secret: false,
        doc: "PEM private key for `tls.cert`.",
    },
    OptionDoc {
        key: "http.body_limit_bytes",
        default: "104857600",
        secret: false,
        doc: "Largest request body accepted, in bytes (100 MiB); larger requests get 413.",
    },
    OptionDoc {
        key: "http.request_timeout_secs",
        default: "300",
        secret: false,
        doc: "Longest time a request may take, in seconds; slower requests get 408.",
    },
    OptionDoc {
        key: "http.trusted_proxies",
        default: "-",
        secret: false,
        doc: "Comma-separated CIDRs of reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed. Unset: headers ignored, the peer address is the client.",
    },
    OptionDoc {
        key: "http.allow_cidrs",
        default: "-",
        secret: false,
        doc: "Comma-separated CIDRs allowed to reach the server at all; others get 403. Unset: everyone (collectors connect from anywhere).",
    },
    OptionDoc {
        key: "admin.allow_cidrs",
        default: "127.0.0.0/8,::1/128",
        secret: false,
        doc: "Comma-separated CIDRs from which the admin surface (`/v1/admin/…`, `/v1/audits`, the console's `/console/admin`) answers; from anywhere else it answers 404 (M5).",
    },
    OptionDoc {
        key: "limits.window_secs",
        default: "60",
        secret: false,
        doc: "Length of one API-budget window, in seconds. Budgets below count requests per window; they are shared by every instance using the same database (each instance adds its counts there about once a second).",
    },
    OptionDoc {
        key: "limits.api_per_window",
        default: "600",
        secret: false,
        doc: "Requests per window allowed to one API token, and separately to one account (all its sessions and tokens together), on the JSON APIs. Past it: 429 with `Retry-After`.",
    },
    OptionDoc {
        key: "limits.collector_per_window",
        default: "60000",
        secret: false,
        doc: "Requests per window allowed to one collector (an app user, or an account using the OpenRosa endpoints): a larger budget of its own, so a field team syncing at the end of the day is never cut off by someone's script. Teams share one app user or account across many phones, so the default (1,000 a second) is sized for a whole team sending at once, not one phone.",
    },
    OptionDoc {
        key: "limits.anonymous_per_window",
        default: "600",
        secret: false,
        doc: "Requests per window allowed to one IP address without credentials.",
    },
    OptionDoc {
        key: "limits.restrict_factor",
        default: "10",
        secret: false,
        doc: "Sustained excess: a token, account or collector that attempts more than this many times its budget …",
    },
    OptionDoc {
        key: "limits.restrict_windows",
        default: "10",
        secret: false,
        doc: "… in each of this many consecutive windows (default: over 10× budget for 10 minutes) is restricted automatically, with an audit event and a notice to its owner and the administrators, until an administrator lifts it. 0 turns automatic restriction off.",
    },
    OptionDoc {
        key: "limits.restrict_mode",
        default: "read_only",
        secret: false,
        doc: "What an automatic restriction does: `read_only` (reads still work; every change gets 403 `restricted`) or `suspended` (every request gets 403 `restricted`).",
    },
    OptionDoc {
        key: "audit.retention_days",
        default: "0",
        secret: false,
        doc: "Audit entries older than this many days are deleted (checked hourly); the chain stays verifiable from the oldest entry kept, whose predecessor's hash is kept as the anchor. 0 keeps every entry.",
    },
    OptionDoc {
        key: "signup.mode",
        default: "closed",
        secret: false,
        doc: "Who may create an account with `POST /v1/signup`: `closed` (only with an invite link from an administrator), `invite` (only with an invite link, which any signed-in account may make), or `open` (anyone). See docs/accounts.md.",
    },
    OptionDoc {
        key: "session.idle_timeout_secs",
        default: "1800",
        secret: false,
        doc: "A browser (cookie) session ends after this many seconds without a request.",
    },
    OptionDoc {
        key: "session.absolute_timeout_secs",
        default: "43200",
        secret: false,
        doc: "A browser (cookie) session ends this many seconds after sign-in, however active.",
    },
    OptionDoc {
        key: "http.hsts_max_age_secs",
        default: "31536000",
        secret: false,
        doc: "`Strict-Transport-Security` max-age sent over HTTPS, in seconds.",
    },
    OptionDoc {
        key: "intake.max_attachment_bytes",
        default: "104857600",
        secret: false,
        doc: "Largest single file attached to a submission, in bytes (100 MiB); a larger one gets 413. The whole request is also bounded by `http.body_limit_bytes`.",
    },
    OptionDoc {
        key: "intake.journal_max_bytes",
        default: "1073741824",
        secret: false,
        doc: "Bound of the intake journal (`<data_dir>/intake-journal`), in bytes (1 GiB): while the database is unreachable, submissions are acknowledged from this encrypted local journal and stored when it is back. Past the bound, submissions get 503 `intake.journal_full` (the device keeps them and retries). Size it for the longest outage to ride out: submissions per hour × average XML size × hours.",
    },
    OptionDoc {
        key: "backup.target",
        default: "-",
        secret: false,
        doc: "Where backups go: `file:///path` (a directory, ideally on another disk or host) or `s3://bucket/prefix` (an S3-compatible bucket reached with the `s3.*` settings; use a different bucket from `blob_store`). Set: the server takes a backup daily (one instance of several) and `fieldvault backup` works. Unset: every start warns and `/metrics` shows `fieldvault_backup_configured 0`.",
    },
    OptionDoc {
        key: "backup.key_file",
        default: "-",
        secret: false,
        doc: "File holding the backup key (base64 of 32 bytes, mode 0600), created by `fieldvault backup keygen`. Keep it apart from the master key and escrow a copy off-site: a backup opens only with both. Required when `backup.target` is set.",
    },
    OptionDoc {
        key: "backup.journal_interval",
        default: "30",
        secret: false,
        doc: "Embedded store: seconds between shipments of the change journal (every committed change, encrypted) to `backup.target`, 1 to 60. Point-in-time recovery reaches up to the last shipment; a change is never more than this old when the target gets it.",
    },
    OptionDoc {
        key: "backup.keep_daily",
        default: "7",
        secret: false,
        doc: "Retention: the newest backup of each of this many most recent days is kept.",
    },
    OptionDoc {
        key: "backup.keep_weekly",
        default: "4",
        secret: false,
        doc: "Retention: the newest backup of each of this many most recent weeks is kept.",
    },
    OptionDoc {
        key: "backup.keep_monthly",
        default: "6",
        secret: false,
        doc: "Retention: the newest backup of each of this many most recent 30-day months is kept.",
    },
    OptionDoc {
        key: "intake.allow_plaintext_to_encrypted_forms",
        default: "false",
        secret: false,
        doc: "Accept unencrypted submissions to a form that carries a public key. Off: they are refused (400), so a misconfigured client cannot leave plaintext on the server.",
    },
    OptionDoc {
        key: "data.purge_after_days",
        default: "30",
        secret: false,
        doc: "Days a deleted submission stays in the trash (restorable) before the purge destroys it: its sealed XML is overwritten and its rows and attachment blobs removed. `0` purges at the next run.",
    },
    OptionDoc {
        key: "data.purge_interval_secs",
        default: "3600",
        secret: false,
        doc: "How often the purge of deleted submissions runs, in seconds (first run one interval after start).",
    },
    OptionDoc {
        key: "exports.ttl_hours",
        default: "24",
        secret: false,
        doc: "How long a finished export file (KoboToolbox API `/exports/`) can be downloaded, in hours (1 to 720). Then the encrypted file and its task are deleted.",
    },
    OptionDoc {
        key: "log.format",
        default: "json",
        secret: false,
        doc: "`json` (one object per line, for log shippers) or `text`.",
    },
    OptionDoc {
        key: "log.level",
        default: "info",
        secret: false,
        doc: "Log filter, `tracing` syntax (`info`, `fieldvault=debug`).",
    },
];

/// Where a value came from (shown by `config show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Built-in default.
    Default,
    /// `fieldvault.toml`.
    File,
    /// A `FIELDVAULT_*` variable.
    Env,
    /// A command-line flag.
    Flag,
}

/// How the master key is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySourceKind {
    /// Key file or inline key.
    File,
    /// Argon2id from a passphrase.
    Passphrase,
}

/// Who may sign up (`signup.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupMode {
    /// Only with an invite made by an administrator.
    Closed,
    /// Only with an invite, which any signed-in account may make.
    Invite,
    /// Anyone.
    Open,
}

impl SignupMode {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignupMode::Closed => "closed",
            SignupMode::Invite => "invite",
            SignupMode::Open => "open",
        }
    }
}

/// What an automatic restriction does (`limits.restrict_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictMode {
    /// Reads still work; changes are refused.
    ReadOnly,
    /// Every request is refused.
    Suspended,
}

impl RestrictMode {
    /// The configuration value (also stored on the restriction).
    pub fn as_str(self) -> &'static str {
        match self {
            RestrictMode::ReadOnly => "read_only",
            RestrictMode::Suspended => "suspended",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// See [`OPTIONS`] for each field's meaning.
    pub data_dir: PathBuf,
    #[allow(missing_docs)]
    pub listen: SocketAddr,
    #[allow(missing_docs)]
    pub database_url: Option<SecretString>,
    #[allow(missing_docs)]
    pub database_max_connections: u32,
    #[allow(missing_docs)]
    pub blob_store: Option<String>,
    #[allow(missing_docs)]
    pub s3_endpoint: Option<String>,
    #[allow(missing_docs)]
    pub s3_region: String,
    #[allow(missing_docs)]
    pub s3_access_key_id: Option<String>,
    #[allow(missing_docs)]
    pub s3_secret_access_key: Option<SecretString>,
    #[allow(missing_docs)]
    pub s3_allow_http: bool,
    #[allow(missing_docs)]
    pub master_key: Option<SecretString>,
    #[allow(missing_docs)]
    pub master_key_file: Option<PathBuf>,
    #[allow(missing_docs)]
    pub master_key_source: KeySourceKind,
    #[allow(missing_docs)]
    pub tls_cert: Option<PathBuf>,
    #[allow(missing_docs)]
    pub tls_key: Option<PathBuf>,
    #[allow(missing_docs)]
    pub body_limit_bytes: u64,
    #[allow(missing_docs)]
    pub request_timeout_secs: u64,
    #[allow(missing_docs)]
    pub trusted_proxies: Vec<IpNet>,
    #[allow(missing_docs)]
    pub hsts_max_age_secs: u64,
    #[allow(missing_docs)]
    pub allow_cidrs: Vec<IpNet>,
    #[allow(missing_docs)]
    pub admin_allow_cidrs: Vec<IpNet>,
    #[allow(missing_docs)]
    pub max_attachment_bytes: u64,
    #[allow(missing_docs)]
    pub intake_journal_max_bytes: u64,
    #[allow(missing_docs)]
    pub backup_target: Option<String>,
    #[allow(missing_docs)]
    pub backup_key_file: Option<PathBuf>,
    #[allow(missing_docs)]
    pub backup_keep: [usize; 3],
    /// Seconds between change-journal shipments (embedded store), 1..=60.
    pub backup_journal_interval: u64,
    #[allow(missing_docs)]
    pub allow_plaintext_to_encrypted_forms: bool,
    /// Hours an export file stays downloadable.
    pub exports_ttl_hours: u64,
    #[allow(missing_docs)]
    pub purge_after_days: u64,
    #[allow(missing_docs)]
    pub purge_interval_secs: u64,
    #[allow(missing_docs)]
    pub signup_mode: SignupMode,
    #[allow(missing_docs)]
    pub limits_window_secs: u64,
    #[allow(missing_docs)]
    pub limits_api_per_window: u64,
    #[allow(missing_docs)]
    pub limits_collector_per_window: u64,
    #[allow(missing_docs)]
    pub limits_anonymous_per_window: u64,
    #[allow(missing_docs)]
    pub limits_restrict_factor: u64,
    #[allow(missing_docs)]
    pub limits_restrict_windows: u64,
    #[allow(missing_docs)]
    pub limits_restrict_mode: RestrictMode,
    #[allow(missing_docs)]
    pub audit_retention_days: u64,
    #[allow(missing_docs)]
    pub session_idle_timeout_secs: u64,
    #[allow(missing_docs)]
    pub session_absolute_timeout_secs: u64,
    #[allow(missing_docs)]
    pub log_format: LogFormat,
    #[allow(missing_docs)]
    pub log_level: String,
    /// Where each set value came from.
    pub sources: BTreeMap<&'static str, Source>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./fieldvault-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            database_max_connections: 16,
            blob_store: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
            master_key: None,
            master_key_file: None,
            master_key_source: KeySourceKind::File,
            tls_cert: None,
            tls_key: None,
            body_limit_bytes: 104_857_600,
            request_timeout_secs: 300,
            exports_ttl_hours: 24,
            trusted_proxies: Vec::new(),
            hsts_max_age_secs: 31_536_000,
            allow_cidrs: Vec::new(),
            admin_allow_cidrs: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            max_attachment_bytes: 104_857_600,
            intake_journal_max_bytes: 1_073_741_824,
            backup_target: None,
            backup_key_file: None,
            backup_keep: [7, 4, 6],
            backup_journal_interval: 30,
            allow_plaintext_to_encrypted_forms: false,
            purge_after_days: 30,
            purge_interval_secs: 3600,
            signup_mode: SignupMode::Closed,
            limits_window_secs: 60,
            limits_api_per_window: 600,
            limits_collector_per_window: 60_000,
            limits_anonymous_per_window: 600,
            limits_restrict_factor: 10,
            limits_restrict_windows: 10,
            limits_restrict_mode: RestrictMode::ReadOnly,
            audit_retention_days: 0,
            session_idle_timeout_secs: 1800,
            session_absolute_timeout_secs: 43_200,
            log_format: LogFormat::Json,
            log_level: "info".into(),
            sources: BTreeMap::new(),
        }
    }
}

/// A configuration problem, with the key and the source it came from.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn opt_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

fn opt_string(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a valid number"))
}

/// A number within `lo..=hi`.
fn ranged(v: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let n: u64 = parse_num(v)?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {lo} and {hi}"))
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

impl Config {
    /// Sets `key` from text. Unknown keys and unparsable values are errors naming the key.
    pub fn set(&mut self, key: &str, value: &str, source: Source) -> Result<(), String> {
        let doc = OPTIONS
            .iter()
            .find(|o| o.key == key)
            .ok_or_else(|| format!("unknown option {key:?}"))?;
        let v = value.trim();
        match key {
            "data_dir" => {
                self.data_dir = opt_path(v).ok_or("data_dir cannot be empty")?;
            }
            "listen" => {
                self.listen = v
                    .parse()
                    .map_err(|_| format!("{v:?} is not an address:port such as 127.0.0.1:8080"))?;
            }
            "database_url" => {
                if !(v.is_empty() || v.starts_with("postgres://") || v.starts_with("postgresql://"))
                {
                    return Err(
                        "must start with postgres:// (leave unset for the embedded database)"
                            .into(),
                    );
                }
                self.database_url = opt_string(v).map(SecretString::new);
            }
            "database_max_connections" => {
                let n: u32 = parse_num(v)?;
                if !(1..=1000).contains(&n) {
                    return Err("must be between 1 and 1000".into());
                }
                self.database_max_connections = n;
            }
            "blob_store" => {
                if !v.is_empty() {
                    fieldvault_store::blob::parse_s3_url(v).map_err(|e| e.to_string())?;
                }
                self.blob_store = opt_string(v);
            }
            "s3.endpoint" => self.s3_endpoint = opt_string(v),
            "s3.region" => self.s3_region = v.to_owned(),
            "s3.access_key_id" => self.s3_access_key_id = opt_string(v),
            "s3.secret_access_key" => {
                self.s3_secret_access_key = opt_string(v).map(SecretString::new)
            }
            "s3.allow_http" => self.s3_allow_http = parse_bool(v)?,
            "master_key" => {
                if !v.is_empty() {
                    fieldvault_crypto::keyring::decode_key_base64(v).map_err(|e| e.to_string())?;
                }
                self.master_key = opt_string(v).map(SecretString::new);
            }
            "master_key_file" => self.master_key_file = opt_path(v),
            "master_key_source" => {
                self.master_key_source = match v {
                    "file" => KeySourceKind::File,
                    "passphrase" => KeySourceKind::Passphrase,
                    _ => return Err(format!("{v:?} is not `file` or `passphrase`")),
                }
            }
            "tls.cert" => self.tls_cert = opt_path(v),
            "tls.key" => self.tls_key = opt_path(v),
            "http.body_limit_bytes" => {
                let n: u64 = parse_num(v)?;
                if n < 1024 {
                    return Err("must be at least 1024".into());
                }
                self.body_limit_bytes = n;
            }
            "exports.ttl_hours" => {
                let n: u64 = parse_num(v)?;
                if !(1..=720).contains(&n) {
                    return Err("must be between 1 and 720".into());
                }
                self.exports_ttl_hours = n;
            }
            "http.request_timeout_secs" => {
                let n: u64 = parse_num(v)?;
                if !(1..=86_400).contains(&n) {
                    return Err("must be between 1 and 86400".into());
                }
                self.request_timeout_secs = n;
            }
            "http.allow_cidrs" => self.allow_cidrs = parse_cidrs(v)?,
            "admin.allow_cidrs" => self.admin_allow_cidrs = parse_cidrs(v)?,
            "http.trusted_proxies" => {
                self.trusted_proxies = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<IpNet>()
                            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "http.hsts_max_age_secs" => self.hsts_max_age_secs = parse_num(v)?,
            "intake.max_attachment_bytes" => {
                let n: u64 = parse_num(v)?;
                if n < 1024 {
                    return Err("must be at least 1024".into());
                }
                self.max_attachment_bytes = n;
            }
            "intake.journal_max_bytes" => {
                let n: u64 = parse_num(v)?;
                if n < 1_048_576 {
                    return Err("must be at least 1048576 (1 MiB)".into());
                }
                self.intake_journal_max_bytes = n;
            }
            "backup.target" => {
                if !(v.is_empty() || v.starts_with("file:///") || v.starts_with("s3://")) {
                    return Err("must be file:///path or s3://bucket/prefix".into());
                }
                if v.starts_with("s3://") {
                    fieldvault_store::blob::parse_s3_url(v).map_err(|e| e.to_string())?;
                }
                self.backup_target = opt_string(v);
            }
            "backup.key_file" => self.backup_key_file = opt_path(v),
            "backup.journal_interval" => {
                let n: u64 = parse_num(v)?;
                if !(1..=60).contains(&n) {
                    return Err("must be 1 to 60 (seconds)".into());
                }
                self.backup_journal_interval = n;
            }
            "backup.keep_daily" | "backup.keep_weekly" | "backup.keep_monthly" => {
                let n: usize = parse_num(v)?;
                if n > 1000 {
                    return Err("must be at most 1000".into());
                }
                let i = match key {
                    "backup.keep_daily" => 0,
                    "backup.keep_weekly" => 1,
                    _ => 2,
                };
                self.backup_keep[i] = n;
            }
            "intake.allow_plaintext_to_encrypted_forms" => {
                self.allow_plaintext_to_encrypted_forms = parse_bool(v)?;
            }
            "data.purge_after_days" => {
                let n: u64 = parse_num(v)?;
                if n > 36_500 {
                    return Err("must be at most 36500".into());
                }
                self.purge_after_days = n;
            }
            "data.purge_interval_secs" => {
                let n: u64 = parse_num(v)?;
                if !(1..=86_400).contains(&n) {
                    return Err("must be between 1 and 86400".into());
                }
                self.purge_interval_secs = n;
            }
            "limits.window_secs" => {
                self.limits_window_secs = ranged(v, 1, 3600)?;
            }
            "limits.api_per_window" => self.limits_api_per_window = ranged(v, 1, 10_000_000)?,
            "limits.collector_per_window" => {
                self.limits_collector_per_window = ranged(v, 1, 10_000_000)?;
            }
            "limits.anonymous_per_window" => {
                self.limits_anonymous_per_window = ranged(v, 1, 10_000_000)?;
            }
            "limits.restrict_factor" => self.limits_restrict_factor = ranged(v, 1, 1000)?,
            "limits.restrict_windows" => self.limits_restrict_windows = ranged(v, 0, 1440)?,
            "limits.restrict_mode" => {
                self.limits_restrict_mode = match v {
                    "read_only" => RestrictMode::ReadOnly,
                    "suspended" => RestrictMode::Suspended,
                    _ => return Err(format!("{v:?} is not `read_only` or `suspended`")),
                }
            }
            "audit.retention_days" => self.audit_retention_days = ranged(v, 0, 36_500)?,
            "signup.mode" => {
                self.signup_mode = match v {
                    "closed" => SignupMode::Closed,
                    "invite" => SignupMode::Invite,
                    "open" => SignupMode::Open,
                    _ => return Err(format!("{v:?} is not `closed`, `invite` or `open`")),
                }
            }
            "session.idle_timeout_secs" => {
                let n: u64 = parse_num(v)?;
                if !(1..=2_592_000).contains(&n) {
                    return Err("must be between 1 and 2592000 (30 days)".into());
                }
                self.session_idle_timeout_secs = n;
            }
            "session.absolute_timeout_secs" => {
                let n: u64 = parse_num(v)?;
                if !(1..=2_592_000).contains(&n) {
                    return Err("must be between 1 and 2592000 (30 days)".into());
                }
                self.session_absolute_timeout_secs = n;
            }
            "log.format" => {
                self.log_format = match v {
                    "json" => LogFormat::Json,
                    "text" => LogFormat::Text,
                    _ => return Err(format!("{v:?} is not `json` or `text`")),
                }
            }
            "log.level" => self.log_level = v.to_owned(),
            _ => return Err(format!("unknown option {key:?}")),
        }
        self.sources.insert(doc.key, source);
        Ok(())
    }

    /// Applies a TOML file. Tables become dotted keys (`[tls] cert` → `tls.cert`).
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{} is not valid TOML: {e}", path.display())))?;
        let mut flat = Vec::new();
        flatten("", &table, &mut flat);
        for (key, value) in flat {
            self.set(&key, &value, Source::File).map_err(|e| {
                ConfigError(format!(
                    "{}: {key}: {e}; see docs/configuration.md for the options",
                    path.display()
                ))
            })?;
        }
        Ok(())
    }

    /// Applies `FIELDVAULT_*` variables from `vars`. Unknown `FIELDVAULT_` names are errors, except
    /// the few that are not options (`FIELDVAULT_CONFIG`, test settings).
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        const NOT_OPTIONS: &[&str] = &[
            "FIELDVAULT_CONFIG",
            "FIELDVAULT_TEST_PG",
            "FIELDVAULT_S3S_FS",
        ];
        for (name, value) in vars {
            if !name.starts_with("FIELDVAULT_") || NOT_OPTIONS.contains(&name.as_str()) {
                continue;
            }
            let Some(opt) = OPTIONS.iter().find(|o| o.env() == name) else {
                return Err(ConfigError(format!(
                    "unknown environment variable {name}; see docs/configuration.md for the options"
                )));
            };
            self.set(opt.key, &value, Source::Env)
                .map_err(|e| ConfigError(format!("{name}: {e}")))?;
        }
        Ok(())
    }

    /// Checks the options against each other; returns every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push("tls.cert and tls.key must be set together".to_owned());
        }
        if self.blob_store.is_some() {
            if self.s3_access_key_id.is_none() || self.s3_secret_access_key.is_none() {
                problems
                    .push("blob_store needs s3.access_key_id and s3.secret_access_key".to_owned());
            }
            if let Some(ep) = &self.s3_endpoint
                && ep.starts_with("http://")
                && !self.s3_allow_http
            {
                problems.push(
                    "s3.endpoint is http://; set s3.allow_http = true to accept that".to_owned(),
                );
            }
        }
        if self.backup_target.is_some() && self.backup_key_file.is_none() {
            problems.push(
                "backup.target needs backup.key_file (create one with `fieldvault backup keygen`)"
                    .to_owned(),
            );
        }
        if self.master_key.is_some() && self.master_key_source == KeySourceKind::Passphrase {
            problems.push(
                "master_key and master_key_source = \"passphrase\" exclude each other".to_owned(),
            );
        }
        if self.session_idle_timeout_secs > self.session_absolute_timeout_secs {
            problems.push(
                "session.idle_timeout_secs cannot exceed session.absolute_timeout_secs".to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems.join("; ")))
        }
    }

    /// The master key file in effect.
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(fieldvault_store::open::MASTER_KEY_FILE))
    }

    /// Whether HTTPS is served directly.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The effective value of `key` as text, secrets redacted.
    pub fn display_value(&self, key: &str) -> String {
        fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string)
        }
        fn secret(v: &Option<SecretString>) -> String {
            v.as_ref()
                .map_or_else(|| "-".to_owned(), |_| "[redacted]".to_owned())
        }
        fn path(v: &Option<PathBuf>) -> String {
            v.as_ref()
                .map_or_else(|| "-".to_owned(), |p| p.display().to_string())
        }
        match key {
            "data_dir" => self.data_dir.display().to_string(),
            "listen" => self.listen.to_string(),
            "database_url" => secret(&self.database_url),
            "database_max_connections" => self.database_max_connections.to_string(),
            "blob_store" => opt(&self.blob_store),
            "s3.endpoint" => opt(&self.s3_endpoint),
            "s3.region" => self.s3_region.clone(),
            "s3.access_key_id" => opt(&self.s3_access_key_id),
            "s3.secret_access_key" => secret(&self.s3_secret_access_key),
            "s3.allow_http" => self.s3_allow_http.to_string(),
            "master_key" => secret(&self.master_key),
            "master_key_file" => self.master_key_path().display().to_string(),
            "master_key_source" => match self.master_key_source {
                KeySourceKind::File => "file".into(),
                KeySourceKind::Passphrase => "passphrase".into(),
            },
            "tls.cert" => path(&self.tls_cert),
            "tls.key" => path(&self.tls_key),
            "http.body_limit_bytes" => self.body_limit_bytes.to_string(),
            "http.request_timeout_secs" => self.request_timeout_secs.to_string(),
            "exports.ttl_hours" => self.exports_ttl_hours.to_string(),
            "http.trusted_proxies" => {
                if self.trusted_proxies.is_empty() {
                    "-".into()
                } else {
                    self.trusted_proxies
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                }
            }
            "http.hsts_max_age_secs" => self.hsts_max_age_secs.to_string(),
            "http.allow_cidrs" => cidrs(&self.allow_cidrs),
            "admin.allow_cidrs" => cidrs(&self.admin_allow_cidrs),
            "intake.max_attachment_bytes" => self.max_attachment_bytes.to_string(),
            "intake.journal_max_bytes" => self.intake_journal_max_bytes.to_string(),
            "backup.target" => opt(&self.backup_target),
            "backup.key_file" => path(&self.backup_key_file),
            "backup.journal_interval" => self.backup_journal_interval.to_string(),
            "backup.keep_daily" => self.backup_keep[0].to_string(),
            "backup.keep_weekly" => self.backup_keep[1].to_string(),
            "backup.keep_monthly" => self.backup_keep[2].to_string(),
            "intake.allow_plaintext_to_encrypted_forms" => {
                self.allow_plaintext_to_encrypted_forms.to_string()
            }
            "data.purge_after_days" => self.purge_after_days.to_string(),
            "data.purge_interval_secs" => self.purge_interval_secs.to_string(),
            "signup.mode" => self.signup_mode.as_str().into(),
            "limits.window_secs" => self.limits_window_secs.to_string(),
            "limits.api_per_window" => self.limits_api_per_window.to_string(),
            "limits.collector_per_window" => self.limits_collector_per_window.to_string(),
            "limits.anonymous_per_window" => self.limits_anonymous_per_window.to_string(),
            "limits.restrict_factor" => self.limits_restrict_factor.to_string(),
            "limits.restrict_windows" => self.limits_restrict_windows.to_string(),
            "limits.restrict_mode" => self.limits_restrict_mode.as_str().into(),
            "audit.retention_days" => self.audit_retention_days.to_string(),
            "session.idle_timeout_secs" => self.session_idle_timeout_secs.to_string(),
            "session.absolute_timeout_secs" => self.session_absolute_timeout_secs.to_string(),
            "log.format" => match self.log_format {
                LogFormat::Json => "json".into(),
                LogFormat::Text => "text".into(),
            },
            "log.level" => self.log_level.clone(),
            _ => "-".into(),
        }
    }

    /// `fieldvault config show`: every option, its value (secrets redacted) and its source.
    pub fn render_effective(&self) -> String {
        let mut out = String::from("# Effective Fieldvault configuration (secrets redacted)\n");
        for o in OPTIONS {
            let src = match self.sources.get(o.key) {
                None => "default",
                Some(Source::File) => "file",
                Some(Source::Env) => "env",
                Some(Source::Flag) => "flag",
                Some(Source::Default) => "default",
            };
            out.push_str(&format!(
                "{:<28} = {:<40} # {src}\n",
                o.key,
                self.display_value(o.key)
            ));
        }
        out
    }
}

fn parse_cidrs(v: &str) -> Result<Vec<IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
        })
        .collect()
}

fn cidrs(list: &[IpNet]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => out.push((key, s.clone())),
            toml::Value::Array(items) => out.push((
                key,
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            other => out.push((key, other.to_string())),
        }
    }
}

/// `docs/configuration.md`, rendered from [`OPTIONS`].
pub fn render_reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated by `fieldvault config reference` from crates/fieldvault-server/src/config.rs; \
         a test fails when this file differs. -->\n\n\
         Fieldvault needs no configuration: `fieldvault serve` starts on 127.0.0.1:8080 with an \
         encrypted embedded store in `./fieldvault-data`. Each option can be set in `fieldvault.toml` \
         (in the working directory, or the file named by `--config` / `FIELDVAULT_CONFIG`), in an \
         environment variable, or by a flag where one exists. Precedence: flags > environment > file > \
         defaults. An unknown key or variable is an error, never silently ignored. \
         `fieldvault config show` prints the effective values (secrets redacted) and where each came from.\n\n\
         | key (`fieldvault.toml`) | environment | default | meaning |\n|---|---|---|---|\n",
    );
    for o in OPTIONS {
        let secret = if o.secret {
            " **Secret**: redacted in output."
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {}{} |\n",
            o.key,
            o.env(),
            o.default,
            o.doc,
            secret
        ));
    }
    out.push_str(
        "\nIn `fieldvault.toml`, dotted keys are written as tables:\n\n```toml\n\
         listen = \"0.0.0.0:8443\"\n\
         database_url = \"postgres://fieldvault@db.internal/fieldvault\"\n\
         blob_store = \"s3://fieldvault-blobs/prod\"\n\n\
         [s3]\nendpoint = \"https://s3.example.org\"\naccess_key_id = \"AKIA...\"\n\n\
         [tls]\ncert = \"/etc/fieldvault/cert.pem\"\nkey = \"/etc/fieldvault/key.pem\"\n\n\
         [http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n```\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_and_errors() {
        let mut c = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fieldvault.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9000\"\n[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\n").unwrap();
        c.apply_file(&f).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.trusted_proxies.len(), 2);
        c.apply_env([("FIELDVAULT_LISTEN".to_owned(), "127.0.0.1:9001".to_owned())])
            .unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.sources.get("listen"), Some(&Source::Env));
        c.set("listen", "127.0.0.1:9002", Source::Flag).unwrap();
        assert_eq!(c.listen.port(), 9002);

        std::fs::write(&f, "lisen = \"x\"\n").unwrap();
        let e = Config::default().apply_file(&f).unwrap_err().to_string();
        assert!(e.contains("unknown option \"lisen\""), "{e}");
        let e = Config::default()
            .apply_env([("FIELDVAULT_NOPE".to_owned(), "1".to_owned())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIELDVAULT_NOPE"), "{e}");
        assert!(
            Config::default()
                .set("listen", "nowhere", Source::Flag)
                .is_err()
        );
        assert!(
            Config::default()
                .set("database_url", "mysql://x", Source::Flag)
                .is_err()
        );
        let mut c = Config::default();
        c.set("tls.cert", "/x", Source::Flag).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("tls.key"));
    }

    #[test]
    fn show_redacts_secrets() {
        let mut c = Config::default();
        c.set("database_url", "postgres://u:hunter2@h/db", Source::Env)
            .unwrap();
        c.set("s3.secret_access_key", "s3cr3t-value", Source::File)
            .unwrap();
        let shown = c.render_effective();
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("[redacted]"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn signup_mode_and_session_timeouts() {
        let mut c = Config::default();
        assert_eq!(c.signup_mode, SignupMode::Closed);
        c.set("signup.mode", "invite", Source::File).unwrap();
        assert_eq!(c.display_value("signup.mode"), "invite");
        assert!(c.set("signup.mode", "everyone", Source::File).is_err());
        assert!(
            c.set("session.idle_timeout_secs", "0", Source::Env)
                .is_err()
        );
        c.set("session.idle_timeout_secs", "7200", Source::Env)
            .unwrap();
        c.set("session.absolute_timeout_secs", "3600", Source::Env)
            .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("session.idle_timeout_secs"), "{e}");
        c.set("session.absolute_timeout_secs", "7200", Source::Env)
            .unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn every_option_is_settable_and_shown() {
        for o in OPTIONS {
            let c = Config::default();
            let _ = c.display_value(o.key);
            assert!(o.env().starts_with("FIELDVAULT_"));
        }
    }

    #[test]
    fn reference_doc_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == render_reference(),
            "docs/configuration.md is stale: run `fieldvault config reference > docs/configuration.md`"
        );
    }
}
