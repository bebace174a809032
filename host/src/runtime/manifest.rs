//! The manifest beside each component (`name.toml`): capability grants
//! (deny by default), limits, plugin config and secret references.
//!
//! Secrets are resolved here, once, into [`SecretString`]s held by the
//! plugin they belong to; their values are never logged or serialised.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

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
}

/// Action safety the host enforces per (plugin, target), whatever the
/// plugin does: a rate limit (blast radius) and a circuit breaker.
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
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_actions: 0,
            window_secs: 600,
            breaker_threshold: 5,
            breaker_open_secs: 60,
        }
    }
}

/// Per-invocation limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// API server URL.
    pub endpoint: String,
    /// Name of the secret (in `[secrets]`) holding the bearer token.
    pub token_secret: Option<String>,
}

/// Access to one SMTP server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
}

/// Outgoing HTTP allowlist.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpGrant {
    /// `host` or `host:port` entries the plugin may call.
    pub allow: Vec<String>,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretRef {
    /// An environment variable of the host process.
    Env(String),
    /// A file (e.g. a mounted Docker/Kubernetes secret); trailing newline trimmed.
    File(PathBuf),
}

impl Manifest {
    /// Read `path` if it exists; a missing manifest means the defaults.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
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
                let value = match source {
                    SecretRef::Env(var) => std::env::var(var).map_err(|_| {
                        format!("secret `{name}`: environment variable {var} is not set")
                    })?,
                    SecretRef::File(path) => std::fs::read_to_string(path)
                        .map_err(|e| format!("secret `{name}`: {}: {e}", path.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                };
                Ok((name.clone(), SecretString::from(value)))
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
    fn defaults_deny_everything() {
        let m: Manifest = toml::from_str("").unwrap();
        assert!(m.granted().is_empty());
        assert_eq!(m.limits.timeout_ms, 1_000);
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
