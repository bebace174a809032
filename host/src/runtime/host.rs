//! What one invocation's `Store` holds, and the host side of every
//! interface a plugin imports.
//!
//! Capabilities are checked against the plugin's grants on every call; an
//! ungranted call is answered with `not-granted`, audited, and remembered so
//! the invocation can be classified as `denied`. Nothing here reaches the
//! outside world for a plugin that was not granted it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Clock;
use super::bindings::eventpulse::plugin::{clock, config, log, state, types};
use super::manifest::Manifest;
use crate::model::StateWrite;

/// A plugin's state as the host keeps it in memory: `key → (value, expires_at)`.
pub type StateMap = Mutex<HashMap<String, (String, Option<u64>)>>;

/// State writes made by earlier invocations that are not committed yet
/// (`None` deletes the key): what an invocation reads before the
/// committed state, so events decided in one batch see each other's
/// writes in order.
pub type StateOverlay = BTreeMap<String, Option<(String, Option<u64>)>>;

/// What every invocation of one plugin shares: identity, grants, config and
/// secrets. Built once per load.
pub struct PluginEnv {
    /// The registry name (file stem).
    pub name: String,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// `[config]` as strings.
    pub config: BTreeMap<String, String>,
    /// Resolved secrets; only this plugin's invocations can read them.
    pub secrets: BTreeMap<String, SecretString>,
    /// Persistent state, shared by invocations and kept across reloads.
    pub state: Arc<StateMap>,
    /// The host clock.
    pub clock: Clock,
    /// The Docker Engine the `docker` capability talks to.
    pub docker: super::DockerHost,
    /// Where capability audit records go.
    pub audit: super::Audit,
    /// Where capability calls are counted.
    pub metrics: crate::telemetry::Metrics,
    /// The `kube` grant's HTTP client, built at its first call.
    pub kube_client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    /// The `http` grant's client when it names a `ca_file`, built at its
    /// first call.
    pub http_client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    /// Set under a rehearsal: capabilities are recording stubs.
    pub rehearsal: Option<super::rehearsal::Rehearsal>,
}

/// The span a capability call runs in (a child of the invocation's).
pub(super) fn capability_span(capability: &'static str, operation: &str) -> tracing::Span {
    tracing::info_span!(
        "capability",
        otel.name = format!("{capability} {operation}"),
        capability,
        operation,
    )
}

impl PluginEnv {
    /// Audit one capability call of this plugin: allowed, or refused/failed
    /// with the reason.
    pub fn audit_call(
        &self,
        capability: &str,
        operation: &str,
        target: &str,
        result: Result<(), &str>,
    ) {
        let outcome = if result.is_ok() { "allowed" } else { "failed" };
        self.metrics.capability_call(capability, outcome);
        self.record(capability, operation, target, result);
    }

    /// Audit a call refused by this plugin's grants (counted as denied).
    pub fn refuse_call(&self, capability: &str, operation: &str, target: &str, why: &str) {
        self.metrics.capability_call(capability, "denied");
        self.record(capability, operation, target, Err(why));
    }

    fn record(&self, capability: &str, operation: &str, target: &str, result: Result<(), &str>) {
        self.audit.record(super::AuditRecord {
            at: self.clock.now_ms() as i64,
            plugin: self.name.clone(),
            capability: capability.to_owned(),
            operation: operation.to_owned(),
            target: self.redact(target),
            allowed: result.is_ok(),
            detail: self.redact(result.err().unwrap_or_default()),
        });
    }

    /// `text` with every secret value of this plugin replaced, so that a
    /// plugin echoing its own secret cannot leak it into logs or errors.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets.values() {
            let value = secret.expose_secret();
            // Very short values would redact ordinary words; manifests
            // should not hold such secrets anyway.
            if value.len() >= 4 {
                out = out.replace(value, "[redacted]");
            }
        }
        out
    }
}

/// The `T` of each invocation's `Store`.
pub struct HostState {
    /// The plugin being run.
    pub env: Arc<PluginEnv>,
    /// State writes made by this invocation; applied only if it succeeds.
    pub writes: BTreeMap<String, Option<(String, Option<u64>)>>,
    /// Timers set or cancelled by this invocation; kept only if it succeeds.
    timers: BTreeMap<String, Option<(i64, String)>>,
    /// Uncommitted writes of earlier invocations, read before the state.
    overlay: Option<Arc<StateOverlay>>,
    /// Enforces the memory limit and remembers whether it was hit.
    pub limiter: Limiter,
    /// Set when the plugin called a capability it was not granted.
    pub denied: Option<String>,
    /// WASI (see [`wasi_ctx`]), built on the guest's first WASI call: most invocations make none,
    /// and building it (clocks, random sources, stdio) is a measurable
    /// part of a fresh sandbox's cost.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    http: WasiHttpCtx,
    /// Lets outgoing HTTP through only to granted hosts.
    pub http_gate: HttpGate,
    /// The guest's stderr (panic messages), kept for error reports; set
    /// with `wasi`.
    stderr: Option<MemoryOutputPipe>,
}

impl HostState {
    /// `lazy_wasi: false` builds the WASI context up front (only to
    /// measure what building it on first use saves).
    pub(crate) fn new(
        env: Arc<PluginEnv>,
        memory_limit: usize,
        lazy_wasi: bool,
        overlay: Option<Arc<StateOverlay>>,
    ) -> Self {
        let mut state = HostState {
            writes: BTreeMap::new(),
            timers: BTreeMap::new(),
            overlay,
            limiter: Limiter {
                memory_limit,
                hit: false,
            },
            denied: None,
            wasi: None,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_gate: HttpGate {
                env: env.clone(),
                denied: None,
            },
            env,
            stderr: None,
        };
        if !lazy_wasi {
            wasi_ctx(&mut state.wasi, &mut state.stderr);
        }
        state
    }

    /// What the guest wrote to stderr (a Rust guest's panic message).
    pub fn stderr(&self) -> String {
        self.stderr
            .as_ref()
            .map(|p| String::from_utf8_lossy(&p.contents()).into_owned())
            .unwrap_or_default()
    }

    /// The capability this invocation was denied, if any.
    pub fn denial(&self) -> Option<&String> {
        self.denied.as_ref().or(self.http_gate.denied.as_ref())
    }

    /// The timers set and cancelled, in key order.
    pub(crate) fn take_timers(&mut self) -> Vec<crate::model::TimerWrite> {
        std::mem::take(&mut self.timers)
            .into_iter()
            .map(|(key, set)| crate::model::TimerWrite { key, set })
            .collect()
    }

    /// The state writes, in key order.
    pub(crate) fn take_writes(&mut self) -> Vec<StateWrite> {
        std::mem::take(&mut self.writes)
            .into_iter()
            .map(|(key, value)| StateWrite { key, value })
            .collect()
    }

    pub(super) fn deny(&mut self, capability: &str) -> types::CapabilityError {
        tracing::warn!(
            plugin.name = %self.env.name,
            capability,
            "denied: capability not granted"
        );
        self.denied.get_or_insert_with(|| capability.to_owned());
        types::CapabilityError::NotGranted(format!(
            "capability `{capability}` is not granted to plugin `{}`",
            self.env.name
        ))
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}

/// The `wasi:http` gate: a request goes out only if the manifest's
/// `grants.http.allow` lists its destination (see [`HttpGrant::allows`]),
/// under the grant's timeout, and its response body is cut off at the
/// grant's size cap. Refusals are audited.
///
/// [`HttpGrant::allows`]: super::manifest::HttpGrant::allows
pub struct HttpGate {
    /// The plugin's grants, shared with its other invocations.
    env: Arc<PluginEnv>,
    /// Set when a request was refused.
    pub denied: Option<String>,
}

/// A response body that fails once more than `max` bytes came through.
struct CappedBody {
    inner: wasmtime_wasi_http::WasiBody,
    seen: u64,
    max: u64,
}

impl http_body::Body for CappedBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.seen += data.len() as u64;
            if self.seen > self.max {
                let max = self.max;
                return std::task::Poll::Ready(Some(Err(
                    wasmtime_wasi_http::Error::HttpResponseBodySize(Some(max)),
                )));
            }
        }
        polled
    }
}

/// What is left of a connection after its response head arrived.
type IoDone =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>>;

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn std::future::Future<Output = SendResult> + Send> {
        let uri = request.uri();
        // Only scheme and authority: paths and queries may carry tokens.
        let target = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("?"),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        let operation = request.method().to_string();
        let grant = self
            .env
            .manifest
            .grants
            .http
            .clone()
            .filter(|g| g.allows(uri));
        if let Some(rehearsal) = self.env.rehearsal.clone() {
            // Recorded with secrets redacted (a webhook URL may be one).
            if grant.is_none() {
                let uri = self.env.redact(&uri.to_string());
                rehearsal.http_refused(&operation, &uri, "destination not granted");
                self.denied.get_or_insert_with(|| "http".to_owned());
                return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
            }
            if let Some(why) = rehearsal.refusal() {
                rehearsal.http_refused(&operation, &self.env.redact(&uri.to_string()), why);
                return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionRefused) });
            }
            let env = self.env.clone();
            return Box::new(async move {
                use http_body_util::BodyExt;
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes();
                let stub = rehearsal.http(
                    &operation,
                    &env.redact(&parts.uri.to_string()),
                    &env.redact(&String::from_utf8_lossy(&body)),
                );
                let response = stub.map(|body| {
                    http_body_util::Full::new(bytes::Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed_unsync()
                });
                Ok((
                    response,
                    Box::new(async { Ok(()) }) as Box<dyn std::future::Future<Output = _> + Send>,
                ))
            });
        }
        let Some(grant) = grant else {
            self.env
                .refuse_call("http", &operation, &target, "destination not granted");
            self.denied.get_or_insert_with(|| "http".to_owned());
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        };
        self.env.audit_call("http", &operation, &target, Ok(()));
        let limit = Duration::from_millis(grant.timeout_ms);
        let cap = |t: Option<Duration>| Some(t.map_or(limit, |t| t.min(limit)));
        let options = options.unwrap_or_default();
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: cap(options.connect_timeout),
            first_byte_timeout: cap(options.first_byte_timeout),
            between_bytes_timeout: cap(options.between_bytes_timeout),
        };
        let span = capability_span("http", &operation);
        let env = self.env.clone();
        Box::new(tracing::Instrument::instrument(
            async move {
                use http_body_util::BodyExt;
                let (response, io): (http::Response<wasmtime_wasi_http::WasiBody>, IoDone) =
                    match &grant.ca_file {
                        None => {
                            let send =
                                wasmtime_wasi_http::default_send_request(request, Some(options));
                            let (response, io) = tokio::time::timeout(limit, send)
                                .await
                                .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)??;
                            (response.map(|b| b.boxed_unsync()), Box::pin(io))
                        }
                        Some(ca) => {
                            let client = env
                                .http_client
                                .get_or_init(|| super::tls::client_trusting(ca, limit))
                                .clone()
                                .map_err(|e| {
                                    tracing::warn!(error = %e, "http grant's CA bundle");
                                    wasmtime_wasi_http::Error::TlsCertificateError
                                })?;
                            let send = super::tls::send(&client, request, grant.max_response_bytes);
                            let response = tokio::time::timeout(limit, send)
                                .await
                                .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)??;
                            (response, Box::pin(async { Ok(()) }))
                        }
                    };
                let max = grant.max_response_bytes;
                if let Some(len) = http_body::Body::size_hint(response.body()).exact()
                    && len > max
                {
                    return Err(wasmtime_wasi_http::Error::HttpResponseBodySize(Some(len)));
                }
                Ok((
                    response.map(|body| {
                        CappedBody {
                            inner: body.boxed_unsync(),
                            seen: 0,
                            max,
                        }
                        .boxed_unsync()
                    }),
                    Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
                ))
            },
            span,
        ))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = wasi_ctx(&mut self.wasi, &mut self.stderr);
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// The WASI context, built on first use: nothing granted (no env, args,
/// files, sockets or stdin), stderr kept in memory.
fn wasi_ctx<'a>(
    wasi: &'a mut Option<WasiCtx>,
    stderr: &mut Option<MemoryOutputPipe>,
) -> &'a mut WasiCtx {
    wasi.get_or_insert_with(|| {
        let pipe = MemoryOutputPipe::new(4096);
        *stderr = Some(pipe.clone());
        wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(pipe)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build()
    })
}

/// Memory limiter that records whether the limit stopped the plugin, since
/// a refused `memory.grow` is not a distinct `Trap`.
pub struct Limiter {
    memory_limit: usize,
    /// Whether a grow was refused.
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.hit = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

// ---- always-granted interfaces ----------------------------------------------

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        // Plugins cannot flood the host's logs: one line, bounded.
        let message: String = self.env.redact(&message).chars().take(2048).collect();
        let plugin = self.env.name.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin.name = plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin.name = plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin.name = plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin.name = plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin.name = plugin, "{message}"),
        }
        Ok(())
    }
}

impl clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.env.clock.now_ms())
    }
}

const MAX_STATE_KEY: usize = 256;
const MAX_STATE_VALUE: usize = 64 * 1024;
const MAX_STATE_WRITES: usize = 256;
/// The longest a timer may wait.
const MAX_TIMER_DELAY_MS: u64 = 30 * 24 * 3_600_000;
/// Timers one invocation may set or cancel.
const MAX_TIMERS: usize = 64;

impl super::bindings::eventpulse::plugin::timer::Host for HostState {
    fn set(&mut self, key: String, delay_ms: u64, data: String) -> wasmtime::Result<()> {
        if key.is_empty() || key.len() > MAX_STATE_KEY || data.len() > MAX_STATE_VALUE {
            wasmtime::bail!(
                "timer too large or unnamed (key 1..={MAX_STATE_KEY} B, data ≤ {MAX_STATE_VALUE} B)"
            );
        }
        if delay_ms > MAX_TIMER_DELAY_MS {
            wasmtime::bail!("timer delay {delay_ms} ms is over 30 days");
        }
        if self.timers.len() >= MAX_TIMERS && !self.timers.contains_key(&key) {
            wasmtime::bail!("more than {MAX_TIMERS} timers in one invocation");
        }
        let due = (self.env.clock.now_ms() as i64).saturating_add(delay_ms as i64);
        self.timers.insert(key, Some((due, data)));
        Ok(())
    }

    fn cancel(&mut self, key: String) -> wasmtime::Result<()> {
        if self.timers.len() >= MAX_TIMERS && !self.timers.contains_key(&key) {
            wasmtime::bail!("more than {MAX_TIMERS} timers in one invocation");
        }
        self.timers.insert(key, None);
        Ok(())
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let now = self.env.clock.now_ms();
        let live =
            |(v, exp): &(String, Option<u64>)| exp.is_none_or(|e| e > now).then(|| v.clone());
        if let Some(pending) = self.writes.get(&key) {
            return Ok(pending.as_ref().and_then(live));
        }
        if let Some(pending) = self.overlay.as_ref().and_then(|o| o.get(&key)) {
            return Ok(pending.as_ref().and_then(live));
        }
        let state = self.env.state.lock().expect("state lock");
        Ok(state.get(&key).and_then(live))
    }

    fn set(&mut self, key: String, value: String, ttl_ms: Option<u64>) -> wasmtime::Result<()> {
        // Oversized state is a contract violation: trap rather than store it.
        if key.len() > MAX_STATE_KEY || value.len() > MAX_STATE_VALUE {
            wasmtime::bail!(
                "state entry too large (key ≤ {MAX_STATE_KEY} B, value ≤ {MAX_STATE_VALUE} B)"
            );
        }
        if self.writes.len() >= MAX_STATE_WRITES && !self.writes.contains_key(&key) {
            wasmtime::bail!("more than {MAX_STATE_WRITES} state writes in one invocation");
        }
        let expires = ttl_ms.map(|t| self.env.clock.now_ms().saturating_add(t));
        self.writes.insert(key, Some((value, expires)));
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.writes.insert(key, None);
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.config.get(&key).cloned())
    }

    fn secret(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .env
            .secrets
            .get(&name)
            .map(|s| s.expose_secret().to_owned()))
    }
}

// The granted capabilities (`docker`, `kube`, `smtp`) live in their own
// modules.
