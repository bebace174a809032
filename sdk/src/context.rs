//! [`Context`]: the capabilities the host lends a plugin for one invocation.
//!
//! On wasm the calls go to the host's imports; in native tests they go to a
//! [`crate::testing::FakeHost`]. Nothing here reaches the outside world on
//! its own: a capability the manifest does not grant answers
//! [`CapabilityError::NotGranted`].

use crate::model::{Error, Labels, Timestamp};

/// Log levels for [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// How a capability call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilityError {
    /// The manifest does not grant this capability.
    NotGranted(String),
    /// The call was outside the grant.
    Denied(String),
    /// The backing service is unreachable; retrying may help.
    Unavailable(String),
    /// The backing service refused or failed the request.
    Failed(String),
}

impl std::fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapabilityError::NotGranted(m) => write!(f, "not granted: {m}"),
            CapabilityError::Denied(m) => write!(f, "denied: {m}"),
            CapabilityError::Unavailable(m) => write!(f, "unavailable: {m}"),
            CapabilityError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for CapabilityError {}

impl From<CapabilityError> for Error {
    /// Unavailable and failed backends are worth retrying; a denial is not.
    fn from(e: CapabilityError) -> Self {
        match e {
            CapabilityError::Unavailable(_) | CapabilityError::Failed(_) => {
                Error::Retryable(e.to_string())
            }
            CapabilityError::NotGranted(_) | CapabilityError::Denied(_) => {
                Error::Permanent(e.to_string())
            }
        }
    }
}

/// A container as the `docker` capability reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or none.
    pub health: Option<String>,
    /// Labels.
    pub labels: Labels,
    /// Creation time (seconds since the epoch).
    pub created: u64,
}

/// An outgoing HTTP request for [`Context::http`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `http://host[:port]/path?query` or `https://...`.
    pub url: String,
    /// Request headers (`content-length` is set for you).
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A `POST` of `body` with content type `application/json`.
    pub fn post_json(url: impl Into<String>, body: &serde_json::Value) -> Self {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// The response to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The host side of a plugin: what [`Context`] calls into.
///
/// Implemented by the SDK over the real imports, and by
/// [`crate::testing::FakeHost`]. Capabilities a test does not fake answer
/// "not granted", as an ungranted capability does in the host.
pub trait Host {
    /// Write a log line.
    fn log(&self, level: LogLevel, message: &str);
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Read a state key.
    fn state_get(&self, key: &str) -> Option<String>;
    /// Write a state key, optionally expiring after `ttl_ms`.
    fn state_set(&self, key: &str, value: &str, ttl_ms: Option<u64>);
    /// Delete a state key.
    fn state_delete(&self, key: &str);
    /// A config value from the manifest.
    fn config(&self, key: &str) -> Option<String>;
    /// A secret from the manifest.
    fn secret(&self, name: &str) -> Option<String>;
    /// Containers matching `selector`.
    fn docker_list_containers(
        &self,
        _selector: &Labels,
    ) -> Result<Vec<Container>, CapabilityError> {
        Err(CapabilityError::NotGranted("docker".into()))
    }
    /// Send an HTTP request (wasi:http; only to granted hosts).
    fn http(&self, _request: &HttpRequest) -> Result<HttpResponse, CapabilityError> {
        Err(CapabilityError::NotGranted("http".into()))
    }
}

/// The capabilities lent to one invocation.
pub struct Context<'a> {
    host: &'a dyn Host,
}

impl<'a> Context<'a> {
    /// A context over `host`.
    pub fn new(host: &'a dyn Host) -> Self {
        Context { host }
    }

    /// The current time (ms since the epoch), from the host's clock.
    pub fn now(&self) -> Timestamp {
        self.host.now()
    }

    /// Write a log line attributed to this plugin.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.host.log(level, message)
    }

    /// Log at info level.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message)
    }

    /// Log at warn level.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message)
    }

    /// Read this plugin's state.
    pub fn state_get(&self, key: &str) -> Option<String> {
        self.host.state_get(key)
    }

    /// Write this plugin's state; kept only if this invocation succeeds.
    pub fn state_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) {
        self.host.state_set(key, value, ttl_ms)
    }

    /// Delete a key from this plugin's state.
    pub fn state_delete(&self, key: &str) {
        self.host.state_delete(key)
    }

    /// A value from the `[config]` table of this plugin's manifest.
    pub fn config(&self, key: &str) -> Option<String> {
        self.host.config(key)
    }

    /// A secret named in this plugin's manifest.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.host.secret(name)
    }

    /// Send an HTTP request. Only hosts in the manifest's `grants.http.allow`
    /// are reachable; anything else is [`CapabilityError::NotGranted`].
    pub fn http(&self, request: &HttpRequest) -> Result<HttpResponse, CapabilityError> {
        self.host.http(request)
    }

    /// Containers matching every label of `selector`, within the grant.
    pub fn docker_list_containers(
        &self,
        selector: &Labels,
    ) -> Result<Vec<Container>, CapabilityError> {
        self.host.docker_list_containers(selector)
    }
}
