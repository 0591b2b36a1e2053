//! The `[broker]` section: where and how alerts are published.
//!
//! With nothing configured the agent publishes to `amqp://localhost:5672/%2f` as guest/guest
//! (RabbitMQ's default account, which only works from localhost). Credentials never come from a
//! URL, the command line or a log line. The user is `IEMD_AMQP_USER`, else `broker.user`; the
//! password, the first that is there:
//!
//! 1. `IEMD_AMQP_PASSWORD`: `iemd` takes it out of its environment at the start of `main`
//!    ([`keep_env_password`]), so no child process inherits it;
//! 2. the systemd credential `amqp-password`, `$CREDENTIALS_DIRECTORY/amqp-password`
//!    (`LoadCredential=amqp-password:/etc/iemd/amqp-password`, systemd 247 and later): systemd
//!    hands it to the service's user only, in a private read-only directory;
//! 3. `broker.password_file`: owned by root or the daemon's user, readable by nobody but that
//!    owner and the daemon's group (`root:iemd 0640` passes), writable by nobody but its owner.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::Problem;

/// Body format of published messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// The alert JSON (`iem.alert/v1`) as spooled; exchange `iem`, key `iem.<severity>.<component>`.
    #[default]
    V1,
    /// The old sensor's SSPL sensor response; exchange `sspl-out`, key `sensor-key`.
    Sspl,
}

/// Queue type of the optional queue the agent declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    #[default]
    Classic,
    Quorum,
}

/// A durable queue declared and bound to the exchange.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    #[serde(default)]
    pub kind: QueueKind,
    /// Binding key; default `#` (everything).
    #[serde(default = "default_binding")]
    pub binding_key: String,
}

fn default_binding() -> String {
    "#".into()
}

/// TLS for `amqps://` URLs. The server's host name is always verified.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM CA bundle the server certificate must chain to.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM client certificate (with `key_file`) for mutual TLS.
    pub(crate) cert_file: Option<PathBuf>,
    /// PEM PKCS#8 private key of the client certificate.
    pub(crate) key_file: Option<PathBuf>,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Broker nodes (one URL per node of a cluster). They are tried in an order shuffled by
    /// the host name (stable for a host; a cluster's agents spread over the nodes), not in the
    /// order written; the first reachable one is used, and after losing it (or after it keeps
    /// refusing alerts) the others are tried first.
    pub urls: Vec<String>,
    /// Try the URLs whose host is this machine (loopback, `localhost`, this host name) first.
    pub local_first: bool,
    /// User name (`IEMD_AMQP_USER` overrides it); its password comes from `IEMD_AMQP_PASSWORD`,
    /// the systemd credential `amqp-password` or `password_file`.
    pub user: Option<String>,
    /// File holding the password (first line): owned by root or the daemon's user, readable by
    /// nobody but that owner and the daemon's group, writable by its owner only.
    pub password_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// Allow `amqp://` (no TLS) to a host that is not loopback: the password and the alerts
    /// then cross the network in clear text.
    pub allow_plaintext: bool,
    pub format: BodyFormat,
    /// Exchange; default `iem` (v1) or `sspl-out` (sspl).
    pub exchange: Option<String>,
    /// Declare the exchange (durable topic) and the queue at connect.
    pub declare: bool,
    pub queue: Option<QueueConfig>,
    /// Published messages awaiting their confirm at most.
    pub window: usize,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub connect_timeout_ms: u64,
    /// A session with alerts in flight and no confirm for this long (or a publish that blocks
    /// this long) is given up: reconnect and send everything unconfirmed again (same ids).
    pub stall_timeout_ms: u64,
    /// At shutdown, how long to wait for outstanding confirms.
    pub shutdown_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            urls: vec!["amqp://localhost:5672/%2f".into()],
            local_first: false,
            user: None,
            password_file: None,
            tls: None,
            allow_plaintext: false,
            format: BodyFormat::V1,
            exchange: None,
            declare: true,
            queue: None,
            window: 256,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            connect_timeout_ms: 10_000,
            stall_timeout_ms: 30_000,
            shutdown_timeout_ms: 5_000,
        }
    }
}

/// Shows everything but secrets (there are none in the struct itself, but URLs are shown
/// without any user info in case a bad one slipped past validation).
impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("BrokerConfig")
            .field("urls", &urls)
            .field("local_first", &self.local_first)
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("format", &self.format)
            .field("exchange", &self.exchange_name())
            .field("declare", &self.declare)
            .field("queue", &self.queue)
            .field("window", &self.window)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("stall_timeout_ms", &self.stall_timeout_ms)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .finish()
    }
}

/// The URL with the password of its user info removed (`amqp://u:p@h/` -> `amqp://u@h/`), for
/// logs, metric labels, `/health` and `--check-config`. An `@` after the authority (in the path
/// or query) is not user info and is kept.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user = authority[..at].split(':').next().unwrap_or("");
    format!(
        "{}{}{}{}",
        &url[..scheme_end],
        user,
        &authority[at..],
        &url[authority_end..]
    )
}

impl BrokerConfig {
    /// The exchange messages go to.
    pub fn exchange_name(&self) -> &str {
        match (&self.exchange, self.format) {
            (Some(e), _) => e,
            (None, BodyFormat::V1) => "iem",
            (None, BodyFormat::Sspl) => "sspl-out",
        }
    }

    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.urls.is_empty() {
            problems.push(Problem::new("broker.urls", "at least one URL is needed"));
        }
        for (i, url) in self.urls.iter().enumerate() {
            let key = format!("broker.urls[{i}]");
            match url.parse::<amq_protocol::uri::AMQPUri>() {
                Err(e) => problems.push(Problem::new(key, e)),
                Ok(uri) => {
                    if let Some(reason) = too_long(&uri.vhost) {
                        problems.push(Problem::new(key.clone(), format!("virtual host {reason}")));
                    }
                    if uri.scheme == amq_protocol::uri::AMQPScheme::AMQP
                        && !self.allow_plaintext
                        && !is_loopback(&uri.authority.host)
                    {
                        problems.push(Problem::new(
                            key.clone(),
                            "amqp:// to a host that is not loopback sends the broker password in clear text; use amqps:// (with [broker.tls]) or set broker.allow_plaintext = true",
                        ));
                    }
                    let after_scheme = url.split_once("://").map_or("", |(_, r)| r);
                    let authority = after_scheme.split('/').next().unwrap_or("");
                    if authority.contains('@') {
                        problems.push(Problem::new(
                            key.clone(),
                            "must not contain credentials; use broker.user + broker.password_file or IEMD_AMQP_USER/IEMD_AMQP_PASSWORD",
                        ));
                    }
                    if url.starts_with("amqp://") && self.tls.is_some() {
                        problems.push(Problem::new(
                            key,
                            "broker.tls is set but this URL is amqp://, not amqps://",
                        ));
                    }
                }
            }
        }
        let user = self.user_name();
        if self.password_file.is_some() && user.is_none() {
            problems.push(Problem::new(
                "broker.password_file",
                "broker.user and broker.password_file go together",
            ));
        }
        if let Some(path) = &self.password_file {
            check_password_file(path, problems);
        }
        match (self.password_source(), user) {
            (None, Some(_)) => problems.push(Problem::new(
                "broker.user",
                format!(
                    "has no password: set broker.password_file, the systemd credential \
                     {CREDENTIAL} ($CREDENTIALS_DIRECTORY) or {PASSWORD_ENV}"
                ),
            )),
            (Some(PasswordSource::Credential(path)), _) => {
                if let Err(e) = std::fs::File::open(&path) {
                    problems.push(Problem::new(
                        "broker.user",
                        format!("the systemd credential {}: {e}", path.display()),
                    ));
                }
            }
            (Some(PasswordSource::Environment), None) => problems.push(Problem::new(
                "broker.user",
                format!(
                    "{PASSWORD_ENV} is set but there is no user: set broker.user or {USER_ENV}"
                ),
            )),
            _ => {}
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                problems.push(Problem::new(
                    "broker.tls.key_file",
                    "cert_file and key_file go together",
                ));
            }
            for (key, path) in [
                ("broker.tls.ca_file", &tls.ca_file),
                ("broker.tls.cert_file", &tls.cert_file),
                ("broker.tls.key_file", &tls.key_file),
            ] {
                if let Some(path) = path {
                    check_pem_file(key, path, problems);
                }
            }
        }
        self.validate_names(problems);
        if self.window == 0 || self.window > 65_535 {
            problems.push(Problem::new("broker.window", "must be between 1 and 65535"));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            problems.push(Problem::new(
                "broker.backoff_initial_ms",
                "must be at least 1 and at most broker.backoff_max_ms",
            ));
        }
        if self.connect_timeout_ms == 0 {
            problems.push(Problem::new(
                "broker.connect_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.stall_timeout_ms < 1000 {
            problems.push(Problem::new(
                "broker.stall_timeout_ms",
                "must be at least 1000 (confirms take time under load)",
            ));
        }
    }
}

/// AMQP's limit on exchange and queue names and routing keys (short strings), in bytes.
pub(crate) const MAX_AMQP_NAME: usize = 255;

/// Why `name` does not fit an AMQP short string, if it does not.
fn too_long(name: &str) -> Option<String> {
    (name.len() > MAX_AMQP_NAME).then(|| {
        format!(
            "is {} bytes long; AMQP allows at most {MAX_AMQP_NAME}",
            name.len()
        )
    })
}

impl BrokerConfig {
    /// Exchange, queue and binding key must be names the broker takes: within AMQP's 255
    /// bytes (a longer one made the publisher panic), and not in the `amq.` namespace the
    /// broker reserves when iemd is to declare them.
    fn validate_names(&self, problems: &mut Vec<Problem>) {
        const RESERVED: &str = "starts with \"amq.\", which the broker reserves and refuses to \
                                declare; choose another name, or set declare = false to use an \
                                existing one";
        if let Some(e) = &self.exchange {
            let key = "broker.exchange";
            if e.is_empty() {
                problems.push(Problem::new(
                    key,
                    "must not be empty (the default exchange routes by queue name, not by iemd's routing keys)",
                ));
            }
            if let Some(reason) = too_long(e) {
                problems.push(Problem::new(key, reason));
            }
            if self.declare && e.starts_with("amq.") {
                problems.push(Problem::new(key, RESERVED));
            }
        }
        if let Some(q) = &self.queue {
            let key = "broker.queue.name";
            if q.name.is_empty() {
                problems.push(Problem::new(key, "must not be empty"));
            }
            if let Some(reason) = too_long(&q.name) {
                problems.push(Problem::new(key, reason));
            }
            if self.declare && q.name.starts_with("amq.") {
                problems.push(Problem::new(key, RESERVED));
            }
            if let Some(reason) = too_long(&q.binding_key) {
                problems.push(Problem::new("broker.queue.binding_key", reason));
            }
        }
    }
}

/// `localhost` or a loopback address: the only hosts `amqp://` may reach without
/// `allow_plaintext` (every connection carries a password: the configured one, or guest's).
fn is_loopback(host: &str) -> bool {
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The environment variable of the broker password (with [`USER_ENV`] or `broker.user`).
pub const PASSWORD_ENV: &str = "IEMD_AMQP_PASSWORD";
/// The environment variable of the broker user.
pub(crate) const USER_ENV: &str = "IEMD_AMQP_USER";
/// The name of the systemd credential holding the password (`LoadCredential=amqp-password:...`).
pub(crate) const CREDENTIAL: &str = "amqp-password";

/// `IEMD_AMQP_PASSWORD` as the process started with it, once the binary took it out of the
/// environment.
static ENV_PASSWORD: OnceLock<OsString> = OnceLock::new();

/// Keeps the `IEMD_AMQP_PASSWORD` that `iemd` removed from its environment at start (see
/// `src/bin/iemd.rs`), for [`BrokerConfig::password_source`] and [`read_password`]. Only the first
/// call counts.
pub fn keep_env_password(password: OsString) {
    let _ = ENV_PASSWORD.set(password);
}

/// The password from the environment: the one kept at start, else the live variable (iemctl,
/// which starts no child, leaves it there).
fn env_password() -> Option<OsString> {
    ENV_PASSWORD
        .get()
        .cloned()
        .or_else(|| std::env::var_os(PASSWORD_ENV))
}

/// Where the broker password comes from; see the module documentation for the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PasswordSource {
    /// `IEMD_AMQP_PASSWORD`.
    Environment,
    /// The systemd credential `amqp-password` (the file in `$CREDENTIALS_DIRECTORY`).
    Credential(PathBuf),
    /// `broker.password_file`.
    File(PathBuf),
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::Environment => write!(f, "{PASSWORD_ENV}"),
            PasswordSource::Credential(p) => {
                write!(f, "the systemd credential {CREDENTIAL} ({})", p.display())
            }
            PasswordSource::File(p) => write!(f, "broker.password_file {}", p.display()),
        }
    }
}

impl BrokerConfig {
    /// The broker user: `IEMD_AMQP_USER`, else `broker.user`.
    pub(crate) fn user_name(&self) -> Option<String> {
        std::env::var(USER_ENV).ok().or_else(|| self.user.clone())
    }

    /// Where the password comes from; `None`: no password (guest/guest when there is no user).
    pub(crate) fn password_source(&self) -> Option<PasswordSource> {
        if env_password().is_some() {
            return Some(PasswordSource::Environment);
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = PathBuf::from(dir).join(CREDENTIAL);
            if path.exists() {
                return Some(PasswordSource::Credential(path));
            }
        }
        self.password_file.clone().map(PasswordSource::File)
    }
}

/// Reads the password (the first line) from `source`; a password file is checked first (see
/// [`password_file_problem`]). The error is the reason, naming the source, never the password.
pub(crate) fn read_password(source: &PasswordSource) -> Result<String, String> {
    let path = match source {
        PasswordSource::Environment => {
            return env_password()
                .and_then(|p| p.into_string().ok())
                .ok_or_else(|| format!("{PASSWORD_ENV} is not UTF-8"));
        }
        PasswordSource::Credential(path) | PasswordSource::File(path) => path,
    };
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    if let PasswordSource::File(_) = source {
        let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
        if let Some(problem) = password_file_problem(&meta) {
            return Err(format!("{shown} {problem}"));
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// What is wrong with a password file's kind, owner or mode, if anything: it must be a regular
/// file owned by root or this process's user, with no access for others, and no group access
/// but read, for a group of this process (its daemon's group). As root (an operator running
/// `--check-config`, which cannot know the unit's `Group=`), any group may read it.
pub(crate) fn password_file_problem(meta: &std::fs::Metadata) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if !meta.is_file() {
        return Some("is not a regular file".into());
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Some(format!(
            "is owned by uid {}, not by root or this user (uid {me}): chown root it",
            meta.uid()
        ));
    }
    if mode & 0o004 != 0 {
        return Some(format!(
            "is readable by group or others (mode {mode:o}): only its owner and the daemon's \
             group may read it; chmod 640 it (root:iemd) or 600"
        ));
    }
    if mode & 0o003 != 0 {
        return Some(format!(
            "is writable by others (mode {mode:o}): chmod o-rwx it"
        ));
    }
    if mode & 0o030 != 0 {
        return Some(format!(
            "is writable by its group (mode {mode:o}): only its owner may change it; chmod g-wx it"
        ));
    }
    if mode & 0o040 != 0 && me != 0 && !in_my_groups(meta.gid()) {
        return Some(format!(
            "is readable by group {} (mode {mode:o}), which is not the daemon's group (gid {}): \
             chgrp it to the daemon's group or chmod g-r it",
            meta.gid(),
            rustix::process::getegid().as_raw()
        ));
    }
    None
}

/// True when `gid` is this process's effective group or one of its supplementary groups.
fn in_my_groups(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

/// The password file must pass [`password_file_problem`] and be readable (the publisher refuses
/// it otherwise; checking here makes `--check-config` and the start refuse it too, instead of a
/// daemon that runs and never publishes). Its content is not read.
fn check_password_file(path: &Path, problems: &mut Vec<Problem>) {
    const KEY: &str = "broker.password_file";
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) => problems.push(Problem::new(KEY, format!("{shown}: {e}"))),
        Ok(meta) => match password_file_problem(&meta) {
            Some(problem) => problems.push(Problem::new(KEY, format!("{shown} {problem}"))),
            None => {
                if let Err(e) = std::fs::File::open(path) {
                    problems.push(Problem::new(KEY, format!("{shown}: {e}")));
                }
            }
        },
    }
}

/// A TLS file must exist, be readable and hold PEM text.
fn check_pem_file(key: &str, path: &Path, problems: &mut Vec<Problem>) {
    let shown = path.display();
    match std::fs::read(path) {
        Err(e) => problems.push(Problem::new(key, format!("{shown}: {e}"))),
        Ok(bytes) if memchr::memmem::find(&bytes, b"-----BEGIN ").is_none() => {
            problems.push(Problem::new(
                key,
                format!("{shown} is not a PEM file (no -----BEGIN line)"),
            ))
        }
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let mut p = Vec::new();
        BrokerConfig::default().validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(BrokerConfig::default().exchange_name(), "iem");
    }

    #[test]
    fn url_with_password_is_rejected_and_never_shown() {
        let c: BrokerConfig = toml::from_str(
            "urls = ['amqp://localhost/%2f', 'amqp://bob:hunter2@node2:5672/%2f']\nformat = 'sspl'\n\
             allow_plaintext = true",
        )
        .unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "broker.urls[1]");
        assert!(!p[0].reason.contains("hunter2"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("amqp://bob@node2:5672/%2f"), "{shown}");
        assert_eq!(c.exchange_name(), "sspl-out");
    }

    /// There were two `redact_url`: this one hid everything before the last `@` anywhere in the
    /// URL (an `@` in the query hid the host), telemetry's kept the user and cut only the
    /// password. One now: telemetry's, here.
    #[test]
    fn redact_url_removes_only_the_password() {
        assert_eq!(
            redact_url("amqp://guest:s3cr@t@h:5672/%2f"),
            "amqp://guest@h:5672/%2f"
        );
        assert_eq!(
            redact_url("amqps://u:p@h/vh?x=a:b@c"),
            "amqps://u@h/vh?x=a:b@c"
        );
        assert_eq!(redact_url("amqps://h/vh?x=a:b@c"), "amqps://h/vh?x=a:b@c");
        assert_eq!(redact_url("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
        assert_eq!(redact_url("amqp://user@h/"), "amqp://user@h/");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    /// Issue 14: `amqp://` to a remote broker sent the password in clear text without a word.
    #[test]
    fn plaintext_to_a_remote_host_needs_allow_plaintext() {
        let urls = "urls = ['amqp://localhost/%2f', 'amqp://127.0.0.2:5673/%2f', 'amqp://[::1]/%2f', \
                    'amqp://node2:5672/%2f', 'amqp://10.0.0.1/%2f', 'amqps://node3/%2f']";
        let c: BrokerConfig = toml::from_str(urls).unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["broker.urls[3]", "broker.urls[4]"], "{p:?}");
        assert!(p[0].reason.contains("allow_plaintext = true"), "{p:?}");
        let c: BrokerConfig = toml::from_str(&format!("{urls}\nallow_plaintext = true")).unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
    }

    /// Regression: a group/world-readable password file passed `--check-config` and let the
    /// daemon start, whose publisher then refused it and never published.
    #[test]
    fn readable_password_file_and_bad_tls_files_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let c: BrokerConfig = toml::from_str(&format!(
            "urls = ['amqps://node1/%2f']\nuser = 'iem'\npassword_file = '{}'\n\
             [tls]\nca_file = '{}'\ncert_file = '/nonexistent/c.pem'\nkey_file = '/nonexistent/k.pem'",
            pw.display(),
            not_pem.display()
        ))
        .unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        let shown: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {}", p.key, p.reason))
            .collect();
        assert_eq!(p.len(), 4, "{shown:#?}");
        assert!(shown[0].starts_with("broker.password_file: ") && shown[0].contains("mode 644"));
        assert!(shown[1].starts_with("broker.tls.ca_file: ") && shown[1].contains("not a PEM"));
        assert!(shown[2].starts_with("broker.tls.cert_file: /nonexistent/c.pem: No such file"));
        assert!(shown[3].starts_with("broker.tls.key_file: /nonexistent/k.pem: No such file"));
        assert!(!shown.concat().contains("hunter2"));
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        assert!(!p.iter().any(|p| p.key == "broker.password_file"), "{p:?}");
    }

    /// Issue 13: a name longer than AMQP's 255 bytes passed the check and panicked in the
    /// publisher (`ShortString exceeds maximum length`).
    #[test]
    fn amqp_names_are_checked_at_load() {
        let long = "x".repeat(256);
        let c: BrokerConfig = toml::from_str(&format!(
            "urls = ['amqp://localhost/{long}']\nexchange = '{long}'\n\
             [queue]\nname = 'amq.alerts'\nbinding_key = '{long}'"
        ))
        .unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
        let too_long = "is 256 bytes long; AMQP allows at most 255";
        assert_eq!(
            shown,
            [
                format!("broker.urls[0]: virtual host {too_long}"),
                format!("broker.exchange: {too_long}"),
                "broker.queue.name: starts with \"amq.\", which the broker reserves and refuses \
                 to declare; choose another name, or set declare = false to use an existing one"
                    .to_string(),
                format!("broker.queue.binding_key: {too_long}"),
            ]
        );
        // 255 bytes fit; an existing amq. exchange may be used without declaring it.
        let fits = "y".repeat(255);
        let c: BrokerConfig = toml::from_str(&format!(
            "exchange = 'amq.topic'\ndeclare = false\n[queue]\nname = '{fits}'"
        ))
        .unwrap();
        let mut p = Vec::new();
        c.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        let c = BrokerConfig {
            exchange: Some(String::new()),
            ..BrokerConfig::default()
        };
        let mut p = Vec::new();
        c.validate(&mut p);
        assert_eq!(p.len(), 1);
        assert!(p[0].reason.starts_with("must not be empty"), "{p:?}");
    }
}
