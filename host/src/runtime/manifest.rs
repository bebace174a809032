//! The manifest beside each component (`name.toml`): capability grants
//! (deny by default), limits, plugin config and secret references.
//!
//! Secrets are resolved here, once, into [`SecretString`]s held by the
//! plugin they belong to; their values are never logged or serialised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use crate::config::SecretRef;

/// A parsed manifest. A component without one gets the defaults: no grants,
/// default limits, no config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Manifest {
    /// Resource limits for every invocation.
    pub limits: Limits,
    /// Capabilities beyond log, clock, state and config.
    pub grants: Grants,
    /// Values the plugin reads with `config.get`.
    pub config: BTreeMap<String, toml::Value>,
    /// Secrets the plugin reads with `config.secret`, resolved by the host.
    pub secrets: BTreeMap<String, SecretRef>,
    /// How the host guards the targets an action plugin acts on.
    pub safety: Safety,
    /// A rule the host calls on a schedule, as well as on events.
    pub schedule: Schedule,
}

/// `[schedule]`: the host fires a `timer.fired` (key `schedule`) to the rule
/// every `every_secs`, from a durable timer: a check that came due while
/// the host was down runs when it starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// Seconds between calls; `0` (the default): no schedule.
    pub every_secs: u64,
}

/// Action safety the host enforces per (plugin, target), whatever the
/// plugin does: a rate limit (blast radius), a circuit breaker, and
/// approval before an action runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    /// Actions of this plugin per target within `window_secs`; more are
    /// refused (recorded as `action.failed`, never run). `0`: no limit.
    pub max_actions: u32,
    /// The rate limit's window.
    pub window_secs: u64,
    /// Failed attempts in a row on one target that open its breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker holds attempts back before one trial.
    pub breaker_open_secs: u64,
    /// Every action of this plugin waits for approval before it runs.
    pub require_approval: bool,
    /// Actions wait for approval when all of these Alertmanager-style
    /// matchers match the request's `target`, `severity` (its incident's)
    /// and `rule` (e.g. `['target=~"prod-.*"']`). Empty: only
    /// `require_approval` or the rule's decision asks for approval.
    pub approval_when: Matchers,
    /// How long an action waits for approval before it expires, never run.
    pub approval_timeout_secs: u64,
}

impl Safety {
    /// Whether an action on `target` for `rule`, in an incident of
    /// `severity`, must be approved by this plugin's manifest.
    pub fn needs_approval(&self, target: &str, severity: &str, rule: &str) -> bool {
        if self.require_approval {
            return true;
        }
        if self.approval_when.is_empty() {
            return false;
        }
        let labels = [
            ("target".to_owned(), target.to_owned()),
            ("severity".to_owned(), severity.to_owned()),
            ("rule".to_owned(), rule.to_owned()),
        ];
        self.approval_when.0.iter().all(|(_, m)| m.matches(&labels))
    }

    /// Whether `approval_when` needs the incident's severity.
    pub fn approval_reads_severity(&self) -> bool {
        !self.require_approval
            && self
                .approval_when
                .0
                .iter()
                .any(|(_, m)| m.name() == "severity")
    }

    fn validate(&self) -> Result<(), String> {
        if (self.require_approval || !self.approval_when.is_empty())
            && self.approval_timeout_secs == 0
        {
            return Err("[safety] approval_timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_actions: 0,
            window_secs: 600,
            breaker_threshold: 5,
            breaker_open_secs: 60,
            require_approval: false,
            approval_when: Matchers::default(),
            approval_timeout_secs: 3600,
        }
    }
}

/// Alertmanager-style matchers, parsed once when the manifest is read
/// (an unparsable one fails the load), kept with their text.
#[derive(Debug, Clone, Default)]
pub struct Matchers(std::sync::Arc<[(String, eventpulse_matchers::Matcher)]>);

impl Matchers {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Matchers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(text, _)| text))
    }
}

impl<'de> Deserialize<'de> for Matchers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .into_iter()
            .map(|t| {
                eventpulse_matchers::Matcher::parse(&t)
                    .map(|m| (t, m))
                    .map_err(serde::de::Error::custom)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Matchers(v.into()))
    }
}

/// Per-invocation limits.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel units (roughly wasm instructions) per invocation.
    pub fuel: u64,
    /// Wall-clock deadline per invocation, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory cap, in MiB (capped by the runtime's maximum).
    pub memory_mb: u64,
    /// Instances of this plugin that may run at once; more calls wait.
    pub max_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            timeout_ms: 1_000,
            memory_mb: 32,
            max_concurrency: 16,
        }
    }
}

/// Granted capabilities. Absent means denied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// Docker Engine access, scoped to a label selector and an image allowlist.
    pub docker: Option<DockerGrant>,
    /// Read access to a Kubernetes API server.
    pub kube: Option<KubeGrant>,
    /// Mail through one SMTP server.
    pub smtp: Option<SmtpGrant>,
    /// Outgoing HTTP to the listed hosts.
    pub http: Option<HttpGrant>,
}

/// What a plugin may do on the Docker Engine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerGrant {
    /// Labels a container must carry for the plugin to see or touch it.
    pub selector: BTreeMap<String, String>,
    /// Images the plugin may create containers from (`*` suffix allowed).
    pub images: Vec<String>,
    /// Whether privileged containers may be created.
    pub privileged: bool,
    /// Host paths that may be mounted.
    pub mounts: Vec<String>,
}

/// Access to a Kubernetes API server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeGrant {
    /// API server URL (unset with `in_cluster`).
    pub endpoint: String,
    /// Name of the secret (in `[secrets]`) holding the bearer token.
    pub token_secret: Option<String>,
    /// PEM bundle of the CAs that sign the API server's certificate; the
    /// system roots are not trusted when it is set.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate to authenticate with (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// The pod's service account: the API server from
    /// `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the token (read
    /// on every call, as it rotates) and `ca.crt` from
    /// `service_account_dir`.
    pub in_cluster: bool,
    /// Where the service account is mounted.
    pub service_account_dir: Option<PathBuf>,
    /// The writes it may make (`cordon`, `evict`, `delete`); none by
    /// default: the grant is read-only.
    pub write: Vec<KubeWrite>,
}

/// A write the `kube` capability can make, each granted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeWrite {
    /// Mark nodes (un)schedulable.
    Cordon,
    /// Evict pods.
    Evict,
    /// Delete node objects.
    Delete,
}

impl KubeWrite {
    /// Its name in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            KubeWrite::Cordon => "cordon",
            KubeWrite::Evict => "evict",
            KubeWrite::Delete => "delete",
        }
    }
}

/// Access to one SMTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpGrant {
    /// Server host.
    pub server: String,
    /// Server port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    /// Envelope and header sender.
    pub from: String,
    /// Login user, if any.
    pub username: Option<String>,
    /// Name of the secret (in `[secrets]`) holding the password.
    pub password_secret: Option<String>,
    /// A PEM CA certificate to trust besides the public roots (a private
    /// relay's own CA).
    pub ca_file: Option<PathBuf>,
    /// Deadline for connecting and for each server reply, in ms.
    pub timeout_ms: u64,
}

impl Default for SmtpGrant {
    fn default() -> Self {
        SmtpGrant {
            server: String::new(),
            port: 587,
            tls: "starttls".into(),
            from: String::new(),
            username: None,
            password_secret: None,
            ca_file: None,
            timeout_ms: 10_000,
        }
    }
}

/// Outgoing HTTP: where a plugin may send requests, and how long and how
/// much it may wait for and read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpGrant {
    /// Destinations: `scheme://host[:port]` (that scheme only), `host:port`
    /// (http or https to that port) or `host` (http on 80, https on 443).
    pub allow: Vec<String>,
    /// Deadline for connecting and for each wait on the response, in ms.
    pub timeout_ms: u64,
    /// Largest response body the plugin may read; more fails the read.
    pub max_response_bytes: u64,
    /// PEM bundle of the CAs that sign the granted servers' certificates
    /// (internal endpoints). Set, only these CAs are trusted for https,
    /// and redirects are not followed.
    pub ca_file: Option<PathBuf>,
}

impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            allow: Vec::new(),
            timeout_ms: 10_000,
            max_response_bytes: 1 << 20,
            ca_file: None,
        }
    }
}

impl HttpGrant {
    /// Whether a request to `uri` is inside the grant. Hosts compare
    /// case-insensitively; the port is the URI's or its scheme's default.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let port = uri.port_u16().unwrap_or(default_port);
        self.allow.iter().any(|entry| {
            let (want_scheme, rest) = match entry.split_once("://") {
                Some((s, rest)) => (Some(s), rest),
                None => (None, entry.as_str()),
            };
            let (want_host, want_port) = match rest.rsplit_once(':') {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) => (h, p),
                    Err(_) => return false,
                },
                None => (
                    rest,
                    want_scheme.map_or(default_port, |s| match s {
                        "https" => 443,
                        _ => 80,
                    }),
                ),
            };
            want_scheme.is_none_or(|s| s.eq_ignore_ascii_case(scheme))
                && want_host.eq_ignore_ascii_case(host)
                && want_port == port
        })
    }
}

impl Manifest {
    /// Read `path` if it exists; a missing manifest means the defaults.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let manifest: Manifest =
                    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                manifest
                    .safety
                    .validate()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(manifest)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Config values as strings (numbers and booleans are formatted).
    pub fn config_strings(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()
    }

    /// Resolve every secret reference. The error names the secret and its
    /// source, never a value.
    pub fn resolve_secrets(&self) -> Result<BTreeMap<String, SecretString>, String> {
        self.secrets
            .iter()
            .map(|(name, source)| {
                let value = source.read().map_err(|e| format!("secret `{name}`: {e}"))?;
                Ok((name.clone(), value))
            })
            .collect()
    }

    /// Names of the granted capabilities, for listings.
    pub fn granted(&self) -> Vec<&'static str> {
        let g = &self.grants;
        [
            g.docker.as_ref().map(|_| "docker"),
            g.kube.as_ref().map(|_| "kube"),
            g.smtp.as_ref().map(|_| "smtp"),
            g.http.as_ref().map(|_| "http"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_conditions_match_target_severity_and_rule() {
        let s: Safety =
            toml::from_str("approval_when = ['target=~\"prod-.*\"', 'severity!=\"info\"']")
                .unwrap();
        s.validate().unwrap();
        assert!(s.needs_approval("prod-db", "critical", "r"));
        assert!(!s.needs_approval("prod-db", "info", "r"));
        assert!(!s.needs_approval("staging", "critical", "r"));
        assert!(
            Safety {
                require_approval: true,
                ..Safety::default()
            }
            .needs_approval("x", "info", "r")
        );
        assert!(!Safety::default().needs_approval("x", "critical", "r"));
        let bad = toml::from_str::<Safety>("approval_when = ['target=~\"(\"']").unwrap_err();
        assert!(bad.to_string().contains("approval_when"), "{bad}");
    }

    #[test]
    fn defaults_deny_everything() {
        let m: Manifest = toml::from_str("").unwrap();
        assert!(m.granted().is_empty());
        assert_eq!(m.limits.timeout_ms, 1_000);
    }

    #[test]
    fn http_grants_match_scheme_host_and_port() {
        let g = HttpGrant {
            allow: vec![
                "https://hooks.example.com".into(),
                "127.0.0.1:9000".into(),
                "api.example.org".into(),
            ],
            ..HttpGrant::default()
        };
        let ok = |u: &str| g.allows(&u.parse().unwrap());
        assert!(ok("https://hooks.example.com/services/x"));
        assert!(ok("https://HOOKS.example.com:443/x"));
        assert!(
            !ok("http://hooks.example.com/x"),
            "scheme is part of the grant"
        );
        assert!(!ok("https://hooks.example.com:8443/x"), "so is the port");
        assert!(ok("http://127.0.0.1:9000/hook"));
        assert!(ok("https://127.0.0.1:9000/hook"));
        assert!(!ok("http://127.0.0.1:9001/hook"));
        assert!(!ok("http://127.0.0.1/hook"));
        assert!(ok("https://api.example.org/bot"));
        assert!(ok("http://api.example.org/bot"));
        assert!(!ok("http://api.example.org:8080/bot"));
        assert!(!ok("https://evil.example.com/hooks.example.com"));
        assert!(!ok("ftp://127.0.0.1:9000/"));
    }

    #[test]
    fn every_shipped_manifest_parses() {
        let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let mut seen = 0;
        for entry in std::fs::read_dir(plugins).unwrap() {
            let path = entry.unwrap().path().join("plugin.toml");
            if path.exists() {
                Manifest::load(&path).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 12, "{seen} manifests");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Manifest>("[grants]\ndokcer = {}\n").unwrap_err();
        assert!(err.to_string().contains("dokcer"), "{err}");
    }

    #[test]
    fn secrets_resolve_from_file_without_leaking_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let text = format!(
            "[secrets]\ntoken = {{ file = {:?} }}\nmissing = {{ env = \"EVENTPULSE_TEST_NO_SUCH_VAR\" }}\n",
            f.display().to_string()
        );
        let m: Manifest = toml::from_str(&text).unwrap();
        let err = m.resolve_secrets().unwrap_err();
        assert!(err.contains("EVENTPULSE_TEST_NO_SUCH_VAR"), "{err}");
        assert!(!err.contains("s3cret"));
        let mut ok = m.clone();
        ok.secrets.remove("missing");
        let s = ok.resolve_secrets().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(s["token"].expose_secret(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
