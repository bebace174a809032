//! The Kubernetes event source (seed 003): the host reads a cluster's
//! Warning events itself instead of waiting for an exporter to push them.
//!
//! It lists `core/v1` Events (`fieldSelector=type=Warning`, paged), then
//! watches from the list's `resourceVersion`. Every batch of events read is
//! stored with the position it was read up to in **one transaction**
//! ([`Store::ingest_kube_events`]): after a crash the watch resumes from
//! the last committed position, so an event is neither missed nor stored
//! twice. A position the API server no longer keeps (`410 Gone`, as an
//! HTTP status or a watch `ERROR` event) makes it list again; what the
//! list returns that was stored already has the same event id
//! ([`kubernetes::warning`]) and is counted as a duplicate, not stored.
//!
//! Failures never stop the host: an unreachable server, a refused token or
//! a store that is down are logged and retried with backoff from the last
//! committed position. An event the server sends that cannot be read is
//! logged, counted as rejected and skipped (it would never become readable).

use std::time::Duration;

use backon::BackoffBuilder as _;
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;

use crate::config::KubeSourceConfig;
use crate::ingest::kubernetes::{self, Warning};
use crate::store::{Store, now_ms};
use crate::telemetry::Metrics;

/// The `source` label of this source's metrics.
const METRIC_SOURCE: &str = "kubernetes_watch";
/// Events asked for per list page.
const PAGE: &str = "500";
/// Largest list page or watch line accepted.
const MAX_BODY: usize = 32 << 20;
/// Deadline to connect, and of one list page.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a round of list-and-watch ended early.
#[derive(Debug)]
enum Failure {
    /// The position is older than the server keeps: list again.
    Gone,
    /// Anything else; retried from the last committed position.
    Retry(String),
}

type Round<T> = Result<T, Failure>;

/// The watcher of one cluster's Warning events.
pub struct Watcher {
    config: KubeSourceConfig,
    store: Store,
    metrics: Metrics,
    /// Where times are written for people (`ingest.time_zone`).
    zone: chrono_tz::Tz,
    /// `kubernetes/<cluster>`: the checkpoint's name and the events' source.
    source: String,
}

impl Watcher {
    /// A watcher of the cluster `config` names, storing into `store`.
    pub fn new(
        config: KubeSourceConfig,
        store: Store,
        metrics: Metrics,
        zone: chrono_tz::Tz,
    ) -> Watcher {
        let source = format!("kubernetes/{}", config.cluster);
        Watcher {
            config,
            store,
            metrics,
            zone,
            source,
        }
    }

    /// List and watch until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<&'static str> {
        const NAME: &str = "kubernetes watcher";
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.retry_initial_ms))
            .with_max_delay(Duration::from_millis(self.config.retry_max_ms))
            .with_jitter()
            .without_max_times();
        let mut delays = backoff.build();
        let mut relist = false;
        tracing::info!(source = %self.source, endpoint = %self.config.endpoint, "watching Kubernetes Warning events");
        loop {
            let round = tokio::select! {
                () = cancel.cancelled() => return Ok(NAME),
                r = self.round(&mut relist) => r,
            };
            match round {
                Ok(()) => delays = backoff.build(),
                Err(Failure::Gone) => {
                    tracing::info!(source = %self.source, "resourceVersion expired (410 Gone): listing again");
                    relist = true;
                }
                Err(Failure::Retry(why)) => {
                    let pause = delays.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(source = %self.source, error = %why, retry_in_ms = pause.as_millis() as u64,
                        "Kubernetes event watch interrupted");
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(NAME),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Resume from the committed position (or list, when there is none or
    /// it expired), then watch until the server ends the watch.
    async fn round(&self, relist: &mut bool) -> Round<()> {
        let api = self.connect()?;
        let committed = if *relist {
            None
        } else {
            self.store
                .source_checkpoint(&self.source)
                .await
                .map_err(|e| Failure::Retry(format!("reading the checkpoint: {e}")))?
        };
        let position = match committed {
            Some(p) => p,
            None => self.list(&api).await?,
        };
        *relist = false;
        self.watch(&api, &position).await
    }

    /// The client, the events' URL and the token, as of now (a token file
    /// or service account token may have rotated).
    fn connect(&self) -> Round<Api> {
        let c = &self.config;
        let (endpoint, token, ca_file) = if c.in_cluster {
            let (endpoint, token, ca) =
                crate::runtime::kube::in_cluster(c.service_account_dir.as_deref())
                    .map_err(Failure::Retry)?;
            (endpoint, Some(token), Some(c.ca_file.clone().unwrap_or(ca)))
        } else {
            let token = match &c.token {
                Some(r) => Some(
                    r.read()
                        .map_err(|e| Failure::Retry(format!("token: {e}")))?
                        .expose_secret()
                        .to_owned(),
                ),
                None => None,
            };
            (c.endpoint.clone(), token, c.ca_file.clone())
        };
        let client = crate::runtime::kube::api_client(
            reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT),
            ca_file.as_deref(),
            c.client_cert_file.as_deref(),
            c.client_key_file.as_deref(),
        )
        .map_err(Failure::Retry)?;
        let path = match &c.namespace {
            Some(ns) => format!("/api/v1/namespaces/{ns}/events"),
            None => "/api/v1/events".to_owned(),
        };
        Ok(Api {
            client,
            url: format!("{}{path}", endpoint.trim_end_matches('/')),
            token,
        })
    }

    /// List every Warning event, a page at a time, storing each page; the
    /// last page is stored with the list's `resourceVersion`, returned.
    async fn list(&self, api: &Api) -> Round<String> {
        let mut next: Option<String> = None;
        loop {
            let mut query = vec![("fieldSelector", "type=Warning"), ("limit", PAGE)];
            if let Some(token) = &next {
                query.push(("continue", token));
            }
            let mut response = api.get(&query, LIST_TIMEOUT).await?;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(retry("list"))? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(Failure::Retry(format!(
                        "list: a page larger than {MAX_BODY} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            let mut page: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| Failure::Retry(format!("list: not JSON: {e}")))?;
            let version = page["metadata"]["resourceVersion"]
                .as_str()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Failure::Retry("list: no metadata.resourceVersion".into()))?
                .to_owned();
            next = page["metadata"]["continue"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let items = match page["items"].take() {
                serde_json::Value::Array(items) => items,
                _ => Vec::new(),
            };
            let warnings: Vec<Warning> = items
                .into_iter()
                .filter_map(|item| self.read(item))
                .collect();
            // Only a complete list is a position to watch from.
            let done = next.is_none();
            self.store_batch(&warnings, done.then_some(version.as_str()))
                .await?;
            if done {
                tracing::info!(source = %self.source, resource_version = %version, "listed Kubernetes Warning events");
                return Ok(version);
            }
        }
    }

    /// Watch from `position` until the server ends the watch (its
    /// `timeoutSeconds`), storing each batch of lines read with the
    /// position it reaches.
    async fn watch(&self, api: &Api, position: &str) -> Round<()> {
        let timeout = self.config.watch_timeout_secs.max(1).to_string();
        let query = [
            ("watch", "1"),
            ("resourceVersion", position),
            ("allowWatchBookmarks", "true"),
            ("fieldSelector", "type=Warning"),
            ("timeoutSeconds", timeout.as_str()),
        ];
        // The server closes the watch after timeoutSeconds; past that and
        // a margin, the connection is dead.
        let deadline = Duration::from_secs(self.config.watch_timeout_secs.max(1) + 30);
        let mut response = api.get(&query, deadline).await?;
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let Some(chunk) = response.chunk().await.map_err(retry("watch"))? else {
                return Ok(());
            };
            buffer.extend_from_slice(&chunk);
            let mut warnings = Vec::new();
            let mut reached: Option<String> = None;
            let mut ended = None;
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match self.watch_event(&line) {
                    Seen::Event(version, warning) => {
                        reached = version.or(reached);
                        warnings.extend(warning.map(|w| *w));
                    }
                    Seen::End(failure) => {
                        ended = Some(failure);
                        break;
                    }
                }
            }
            if buffer.len() > MAX_BODY {
                ended = Some(Failure::Retry(format!(
                    "watch: a line longer than {MAX_BODY} bytes"
                )));
            }
            if reached.is_some() || !warnings.is_empty() {
                self.store_batch(&warnings, reached.as_deref()).await?;
            }
            if let Some(failure) = ended {
                return Err(failure);
            }
        }
    }

    /// One line of a watch: the position it reaches and its Warning, or
    /// the end of the watch.
    fn watch_event(&self, line: &[u8]) -> Seen {
        let mut event: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Seen::End(Failure::Retry(format!("watch: a line is not JSON: {e}"))),
        };
        let object = event["object"].take();
        let version = object["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        match event["type"].as_str().unwrap_or_default() {
            "ADDED" | "MODIFIED" => Seen::Event(version, self.read(object).map(Box::new)),
            "DELETED" | "BOOKMARK" => Seen::Event(version, None),
            "ERROR" if object["code"].as_i64() == Some(410) => Seen::End(Failure::Gone),
            "ERROR" => Seen::End(Failure::Retry(format!(
                "watch: the server sent an error: {}",
                object["message"].as_str().unwrap_or("(no message)")
            ))),
            other => Seen::End(Failure::Retry(format!(
                "watch: unknown event type `{other}`"
            ))),
        }
    }

    /// A Warning from an Event object; `None` for other types, and for an
    /// object that cannot be read (logged and counted).
    fn read(&self, object: serde_json::Value) -> Option<Warning> {
        match kubernetes::warning(object, &self.config.cluster, now_ms(), "event") {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(source = %self.source, error = %e.0, "skipping an Event that cannot be read");
                self.metrics.ingested(METRIC_SOURCE, "rejected", 1);
                None
            }
        }
    }

    /// Store `warnings`, moving the checkpoint to `position` with them.
    async fn store_batch(&self, warnings: &[Warning], position: Option<&str>) -> Round<()> {
        let now = now_ms() as u64;
        let (new, duplicates) = self
            .store
            .ingest_kube_events(
                warnings,
                |w, occurrences| w.event(occurrences, now, self.zone),
                position.map(|p| (self.source.as_str(), p)),
            )
            .await
            .map_err(|e| Failure::Retry(format!("store: {e}")))?;
        self.metrics.ingested(METRIC_SOURCE, "accepted", new);
        self.metrics
            .ingested(METRIC_SOURCE, "deduplicated", duplicates);
        Ok(())
    }
}

/// What one watch line meant.
enum Seen {
    /// The position it reached (if it names one) and its Warning, if any.
    Event(Option<String>, Option<Box<Warning>>),
    /// The watch is over.
    End(Failure),
}

/// Where the events are and how to ask for them.
struct Api {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Api {
    /// GET the events' URL with `query`: the response if it is a success,
    /// [`Failure::Gone`] on 410, else why not.
    async fn get(&self, query: &[(&str, &str)], timeout: Duration) -> Round<reqwest::Response> {
        let mut request = self.client.get(&self.url).query(query).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(retry("request"))?;
        match response.status() {
            s if s.is_success() => Ok(response),
            reqwest::StatusCode::GONE => Err(Failure::Gone),
            s @ (reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN) => {
                Err(Failure::Retry(format!(
                    "the API server refused the credentials ({s}): check sources.kubernetes.token and the account's RBAC (list and watch events)"
                )))
            }
            s => Err(Failure::Retry(format!("the API server answered {s}"))),
        }
    }
}

/// A transport error, with its causes (a refused certificate says so).
fn retry(what: &'static str) -> impl Fn(reqwest::Error) -> Failure {
    move |e| {
        let e = e.without_url();
        let mut text = format!("{what}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Failure::Retry(text)
    }
}
