//! The `eventpulse` command: parses the CLI, loads config, starts logging
//! and calls into the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use eventpulse::app::App;
use eventpulse::config::Config;
use eventpulse::scaffold::{self, Kind};
use tokio_util::sync::CancellationToken;

/// jemalloc rather than glibc's malloc: under load the pipeline allocates
/// and frees event JSON and statement arguments on every worker thread, and
/// glibc's arenas spent ~30 % of the process's samples in a storm (the
/// pipeline bench, SQLite, back to back: 1,145 → 1,251 alerts/s, 50k storm
/// 49.6 → 32.9 s, peak RSS 184 → 158 MiB with it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "eventpulse",
    version,
    about = "Alerts in, sandboxed rules and runbook actions out"
)]
struct Cli {
    /// Config file (TOML). Without one, the embedded defaults apply.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: ingest and admin API, plugin registry, pipeline.
    Serve {
        /// Build the plugins in ./plugins into the plugin directory first.
        #[arg(long)]
        build_plugins: bool,
        /// Once serving, send a sample HighCPU alert (firing, then resolved)
        /// through the pipeline and print the incident it becomes.
        #[arg(long)]
        demo: bool,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Post a sample Alertmanager webhook to a running host.
    SendAlert {
        /// Ingest URL; default: the configured listen address.
        #[arg(long)]
        url: Option<String>,
        /// The `alertname` label.
        #[arg(long, default_value = "HighCPU")]
        alertname: String,
        /// The `service` label.
        #[arg(long, default_value = "app")]
        service: String,
        /// The `severity` label.
        #[arg(long, default_value = "critical")]
        severity: String,
        /// Send it resolved instead of firing (with the `--starts-at` the
        /// firing one printed).
        #[arg(long, requires = "starts_at")]
        resolved: bool,
        /// `startsAt` (RFC 3339): the same value identifies the same alert
        /// instance, so its resolution must repeat it. Default: now.
        #[arg(long)]
        starts_at: Option<String>,
    },
    /// List incidents with their timelines, actions and notifications.
    Incidents {
        /// How many, newest first.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Silences and maintenance windows (in the configured store).
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// Delete what is past its retention (`[retention]`) now.
    Prune {
        /// Count what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Actions waiting for approval (in the configured store).
    Approval {
        #[command(subcommand)]
        command: ApprovalCommand,
    },
    /// Plugin authoring.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Run a rule over the stored events of a window and diff its
    /// decisions with what the installed rule decided then. Nothing
    /// outside is touched: capability calls are refused.
    Replay {
        /// An installed rule's name (enabled or not), or a candidate
        /// `PATH.wasm` with its manifest `PATH.toml` beside it.
        #[arg(long)]
        rule: String,
        /// Compare with this installed rule (default: the candidate's
        /// name, its file stem for a path).
        #[arg(long)]
        against: Option<String>,
        /// Window start: RFC 3339, ms since the epoch, or a duration back
        /// (`24h`, `90m`).
        #[arg(long)]
        since: String,
        /// Window end (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Start from the installed rule's state now, not empty.
        #[arg(long)]
        snapshot_state: bool,
        /// Stop after this many events.
        #[arg(long, default_value_t = 100_000)]
        max_events: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// JSON Lines: one `{"difference": …}` per event as found, then
        /// `{"summary": …}`.
        #[arg(long)]
        json: bool,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a named API token: prints the token once, and the config
    /// entry that holds only its SHA-256.
    New {
        /// Who or what will use it (recorded as `by` of what it does).
        #[arg(long)]
        name: String,
        /// `read` (every GET) or `admin` (every route).
        #[arg(long, value_enum, default_value = "read")]
        scope: ScopeArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    Read,
    Admin,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Scaffold a plugin crate that builds and loads as is.
    New {
        /// Crate name, e.g. `rule-disk-full`.
        name: String,
        /// What it is.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Where to create it.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// Its language: a Rust crate, or a Python module built with
        /// componentize-py.
        #[arg(long, value_enum, default_value = "rust")]
        lang: LangArg,
    },
    /// Build plugin crates to wasm32-wasip2 and install them (`name.wasm` +
    /// `name.toml`) into the plugin directory.
    Build {
        /// Crate directories; default: every crate under ./plugins.
        crates: Vec<PathBuf>,
        /// Output directory; default: the configured plugin directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cargo target directory; default: `target/plugins` of the
        /// crate's workspace.
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Invoke a plugin once, without a host: the real sandbox and limits,
    /// its capabilities replaced by stubs that record every call (nothing
    /// outside is touched). Prints its decision, result or delivery.
    Run {
        /// A component (`name.wasm`, its manifest `name.toml` beside it),
        /// or a plugin crate directory (built first).
        plugin: PathBuf,
        /// The event, as JSON (see `plugins/*/examples/`).
        #[arg(long)]
        event: PathBuf,
        /// The manifest; default: `NAME.toml` beside the component.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The action or notification request, as JSON (actions and
        /// notifiers).
        #[arg(long)]
        request: Option<PathBuf>,
        /// Set a `[config]` value of the plugin, `KEY=VALUE` (repeatable;
        /// `--config` is the host's own configuration file).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        config_values: Vec<String>,
        /// A JSON object of the plugin's state; read first, and written
        /// back after a successful run.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ApprovalCommand {
    /// Actions waiting for approval, with the params hash to approve.
    List,
    /// Let a waiting action run.
    Approve {
        /// The action's id.
        id: String,
        /// Its params hash, as `list` shows it: the approval holds for
        /// exactly that request.
        #[arg(long)]
        hash: String,
        /// Who approves.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse a waiting action: it never runs.
    Reject {
        /// The action's id.
        id: String,
        /// Who rejects.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Mute matching alerts for a while.
    Add {
        /// An Alertmanager matcher (`alertname="DiskFull"`, `service=~"db.*"`); repeat for more, all must match.
        #[arg(long = "matcher", short, required = true)]
        matchers: Vec<String>,
        /// How long, in seconds (or give --ends-at).
        #[arg(long)]
        duration_secs: Option<u64>,
        /// RFC 3339 start; default now.
        #[arg(long)]
        starts_at: Option<String>,
        /// RFC 3339 end.
        #[arg(long)]
        ends_at: Option<String>,
        /// `all` (no incident, action or notification) or `notifications` (remediation runs, notifications muted).
        #[arg(long, default_value = "all")]
        mode: String,
        /// Only on these weekdays (`mon,tue,...`), with --from and --to (UTC): a maintenance window.
        #[arg(long, value_delimiter = ',')]
        days: Vec<String>,
        /// Window start, HH:MM UTC.
        #[arg(long, requires = "days")]
        from: Option<String>,
        /// Window end, HH:MM UTC.
        #[arg(long, requires = "days")]
        to: Option<String>,
        /// Who.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        comment: String,
    },
    /// Silences not yet over.
    List {
        /// Ended ones too.
        #[arg(long)]
        all: bool,
    },
    /// End a silence now.
    Expire {
        /// Its id.
        id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Rust,
    Python,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Rule,
    Action,
    Notifier,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    // `plugin run` prints its report on stdout; logs go to stderr.
    let to_stderr = matches!(
        &cli.command,
        Command::Plugin {
            command: PluginCommand::Run { .. }
        }
    );
    let _telemetry = eventpulse::telemetry::init_to(&config.telemetry, to_stderr)?;
    match cli.command {
        Command::Plugin { command } => plugin(command, &config),
        Command::Token {
            command: TokenCommand::New { name, scope },
        } => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            let scope = match scope {
                ScopeArg::Read => "read",
                ScopeArg::Admin => "admin",
            };
            println!("{token}");
            eprintln!(
                "Give the token above to {name}; it is not kept anywhere. Add this to the config:\n\n\
                 [[admin.tokens]]\nname = {name:?}\nscope = \"{scope}\"\nsha256 = \"{}\"",
                eventpulse::api::auth::hash_hex(&token)
            );
            Ok(())
        }
        Command::Migrate => runtime()?.block_on(async {
            eventpulse::store::Store::connect(&config.database_url).await?;
            tracing::info!(database = %eventpulse::store::redacted_url(&config.database_url), "migrated");
            Ok(())
        }),
        Command::Serve {
            build_plugins,
            demo,
        } => {
            if build_plugins {
                let crates = scaffold::workspace_plugins(std::path::Path::new("plugins"))?;
                scaffold::build(&crates, &config.plugin_dir, None)?;
            }
            runtime()?.block_on(serve(config, demo))
        }
        Command::SendAlert {
            url,
            alertname,
            service,
            severity,
            resolved,
            starts_at,
        } => runtime()?.block_on(async {
            let url = url.unwrap_or_else(|| ingest_url(&config));
            let starts_at = starts_at.unwrap_or_else(now_rfc3339);
            let labels = [
                ("service", service.as_str()),
                ("severity", severity.as_str()),
            ];
            let answer =
                send_alert(&config, &url, &alertname, &labels, resolved, &starts_at).await?;
            println!("{answer}");
            if !resolved {
                println!(
                    "startsAt {starts_at}; resolve it with: eventpulse send-alert --alertname {alertname} \
                     --service {service} --resolved --starts-at {starts_at}"
                );
            }
            Ok(())
        }),
        Command::Silence { command } => runtime()?.block_on(silence(command, &config)),
        Command::Approval { command } => runtime()?.block_on(approval(command, &config)),
        Command::Prune { dry_run } => runtime()?.block_on(async {
            let store = eventpulse::store::Store::connect(&config.database_url).await?;
            let now = eventpulse::store::now_ms();
            let feeds = eventpulse::app::feeds(&config);
            let pruned = store.prune(&config.retention, feeds, now, dry_run).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for (what, n) in pruned {
                println!("{verb} {n:>9} {what}");
            }
            Ok(())
        }),
                Command::Replay {
            rule,
            against,
            since,
            until,
            snapshot_state,
            max_events,
            timeout_secs,
            json,
        } => runtime()?.block_on(async {
            use eventpulse::replay::{self, Candidate, StartState};
            let now = eventpulse::store::now_ms();
            let at = |v: &str| eventpulse::api::lists::instant(v, now).map_err(anyhow::Error::msg);
            let window = eventpulse::store::Window {
                since: Some(at(&since)?),
                until: until.as_deref().map(at).transpose()?,
            };
            let candidate = if rule.ends_with(".wasm") {
                Candidate::File {
                    wasm: PathBuf::from(&rule),
                    manifest: None,
                }
            } else {
                Candidate::Installed(rule)
            };
            let request = replay::Request {
                rule: candidate,
                against,
                window,
                state: if snapshot_state {
                    StartState::Snapshot
                } else {
                    StartState::Empty
                },
                max_events,
                deadline: std::time::Duration::from_secs(timeout_secs),
            };
            let store = eventpulse::store::Store::connect(&config.database_url).await?;
            let settings = replay::Settings::new(&config);
            let summary = replay::replay(&store, &settings, &request, |d| {
                if json {
                    println!("{}", serde_json::json!({ "difference": d }));
                } else {
                    print!("{}", render_difference(&d));
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::json!({ "summary": summary }));
            } else {
                println!(
                    "{} {} ({}) against {}: {} events replayed, {} same, {} different, {} errors{}",
                    summary.rule,
                    summary.version,
                    summary.digest,
                    summary.against,
                    summary.replayed,
                    summary.same,
                    summary.different,
                    summary.errors,
                    summary
                        .truncated
                        .as_deref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                );
                if summary.refused_calls > 0 {
                    println!("{} capability call(s) {}", summary.refused_calls, summary.capabilities);
                }
            }
            Ok(())
        }),
        Command::Incidents { limit, json } => runtime()?.block_on(async {
            let store = eventpulse::store::Store::connect(&config.database_url).await?;
            let mut details = Vec::new();
            for i in store.incidents(limit).await? {
                if let Some(d) = store.incident_detail(&i.id).await? {
                    details.push(d);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&details)?);
            } else if details.is_empty() {
                println!("no incidents");
            } else {
                for d in &details {
                    print!("{}", render_incident(d));
                }
            }
            Ok(())
        }),
    }
}

async fn silence(command: SilenceCommand, config: &Config) -> anyhow::Result<()> {
    use eventpulse::pipeline::silences::NewSilence;
    let store = eventpulse::store::Store::connect(&config.database_url).await?;
    let now = eventpulse::store::now_ms();
    match command {
        SilenceCommand::Add {
            matchers,
            duration_secs,
            starts_at,
            ends_at,
            mode,
            days,
            from,
            to,
            by,
            comment,
        } => {
            let weekly = match (days.is_empty(), from, to) {
                (true, None, None) => None,
                (false, Some(from), Some(to)) => Some(eventpulse::model::Weekly { days, from, to }),
                _ => anyhow::bail!("a weekly window needs --days, --from and --to"),
            };
            let asked = NewSilence {
                matchers,
                mode: Some(mode),
                starts_at,
                ends_at,
                duration_secs,
                weekly,
                created_by: by,
                comment,
            };
            let silence = asked.build(now).map_err(|e| anyhow::anyhow!(e))?;
            store.create_silence(&silence).await?;
            println!("{}", serde_json::to_string_pretty(&silence)?);
        }
        SilenceCommand::List { all } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&store.silences(now, all).await?)?
            );
        }
        SilenceCommand::Expire { id } => match store.expire_silence(&id, now).await? {
            Some(s) => println!("{}", serde_json::to_string_pretty(&s)?),
            None => anyhow::bail!("no silence `{id}` that has not ended"),
        },
    }
    Ok(())
}

async fn approval(command: ApprovalCommand, config: &Config) -> anyhow::Result<()> {
    use eventpulse::pipeline::approvals::{self, Ruling, Verdict, Waiting};
    let store = eventpulse::store::Store::connect(&config.database_url).await?;
    let (id, ruling) = match command {
        ApprovalCommand::List => {
            let waiting: Vec<Waiting> = store
                .awaiting_approval()
                .await?
                .iter()
                .filter_map(Waiting::of)
                .collect();
            println!("{}", serde_json::to_string_pretty(&waiting)?);
            return Ok(());
        }
        ApprovalCommand::Approve {
            id,
            hash,
            by,
            reason,
        } => (
            id,
            Ruling {
                verdict: Verdict::Approve,
                params_hash: Some(hash),
                by,
                reason,
                via: "cli",
            },
        ),
        ApprovalCommand::Reject { id, by, reason } => (
            id,
            Ruling {
                verdict: Verdict::Reject,
                params_hash: None,
                by,
                reason,
                via: "cli",
            },
        ),
    };
    let metrics = eventpulse::telemetry::Metrics::disabled();
    let job = approvals::rule(&store, &metrics, &id, &ruling).await?;
    println!("action {} is now {}", job.id, job.status);
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn plugin(command: PluginCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            kind,
            dir,
            lang,
        } => {
            let kind = match kind {
                KindArg::Rule => Kind::Rule,
                KindArg::Action => Kind::Action,
                KindArg::Notifier => Kind::Notifier,
            };
            let path = match lang {
                LangArg::Rust => scaffold::new_plugin(&dir, &name, kind)?,
                LangArg::Python => scaffold::new_python_plugin(&dir, &name, kind)?,
            };
            println!(
                "created {}; build it with: eventpulse plugin build {}",
                path.display(),
                path.display()
            );
            Ok(())
        }
        PluginCommand::Build {
            crates,
            out,
            target_dir,
        } => {
            let crates = if crates.is_empty() {
                scaffold::workspace_plugins(std::path::Path::new("plugins"))?
            } else {
                crates
            };
            let out = out.unwrap_or_else(|| config.plugin_dir.clone());
            for installed in scaffold::build(&crates, &out, target_dir.as_deref())? {
                println!("installed {}", installed.display());
            }
            Ok(())
        }
        PluginCommand::Run {
            plugin,
            event,
            manifest,
            request,
            config_values,
            state,
            json,
        } => {
            let read_json = |path: &std::path::Path| -> anyhow::Result<serde_json::Value> {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
            };
            let mut overrides = Vec::new();
            for kv in &config_values {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
                overrides.push((k.to_owned(), v.to_owned()));
            }
            // A crate is built first, into the cache directory.
            let wasm = if plugin.is_dir() {
                let built = config.cache_dir.join("plugin-run");
                scaffold::build(std::slice::from_ref(&plugin), &built, None)?
                    .pop()
                    .context("nothing was built")?
            } else {
                plugin
            };
            let input = eventpulse::plugin_run::Input {
                manifest,
                wasm,
                config: overrides,
                state,
                event: read_json(&event)?,
                request: request.as_deref().map(read_json).transpose()?,
                cache_dir: config.cache_dir.clone(),
            };
            let report = runtime()?.block_on(eventpulse::plugin_run::run(input))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", eventpulse::plugin_run::render(&report));
            }
            if report.failed.is_some() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn ingest_url(config: &Config) -> String {
    format!("http://{}/api/v1/alerts/alertmanager", config.listen)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn time_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// Post one sample alert; the host's answer.
async fn send_alert(
    config: &Config,
    url: &str,
    alertname: &str,
    labels: &[(&str, &str)],
    resolved: bool,
    starts_at: &str,
) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let body = eventpulse::ingest::alertmanager::sample(
        alertname,
        labels,
        resolved,
        starts_at,
        &now_rfc3339(),
    );
    let mut request = reqwest::Client::new().post(url).json(&body);
    if let Some(token) = &config.ingest.token {
        request = request.bearer_auth(token.expose_secret());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("posting to {url} (is `eventpulse serve` running?)"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {text}");
    Ok(format!("{status} {text}"))
}

/// An incident as `eventpulse incidents` prints it.
fn render_incident(d: &eventpulse::store::IncidentDetail) -> String {
    use std::fmt::Write;
    let i = &d.incident;
    let mut out = format!(
        "incident {} [{}] {} ({}, service {})\n",
        i.id, i.status, i.title, i.severity, i.service
    );
    for e in &d.timeline {
        let change = match (&e.from_status, &e.to_status) {
            (Some(f), Some(t)) => format!("{f} → {t}"),
            (None, Some(t)) => format!("→ {t}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {}  {:<12} {:<22} {}",
            time_of(e.at),
            e.kind,
            change,
            e.cause
        );
    }
    for a in &d.actions {
        let _ = writeln!(
            out,
            "  action       {} on {}: {} after {} attempt(s){}",
            a.plugin,
            a.target,
            a.status,
            a.attempts,
            a.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    for n in &d.notifications {
        let _ = writeln!(
            out,
            "  notification {}: {} after {} attempt(s)",
            n.plugin, n.status, n.attempts
        );
    }
    out
}

/// `serve --demo`: a firing HighCPU alert for `app` through the running
/// host's own ingest; prints the incident it became once it settled.
async fn demo(config: Config, store: eventpulse::store::Store) -> anyhow::Result<()> {
    let labels = [("service", "app"), ("severity", "critical")];
    tracing::info!("demo: sending a firing HighCPU alert for service app");
    let url = ingest_url(&config);
    send_alert(&config, &url, "HighCPU", &labels, false, &now_rfc3339()).await?;
    // Wait until the pipeline has drained: the incident has moved on from
    // `open` and its actions and notifications are done.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let detail = loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let detail = match store.incidents(1).await?.first() {
            Some(i) => store.incident_detail(&i.id).await?,
            None => None,
        };
        let settled = detail.as_ref().is_some_and(|d| {
            d.incident.status != eventpulse::model::IncidentStatus::Open
                && !d.actions.is_empty()
                && d.actions.iter().all(|a| !a.status.is_active())
                && d.notifications.iter().all(|n| !n.status.is_active())
        });
        if settled || tokio::time::Instant::now() > deadline {
            break detail;
        }
    };
    match detail {
        Some(d) => println!("\n{}", render_incident(&d)),
        None => println!("\nno incident yet (are the plugins installed? try --build-plugins)"),
    }
    println!("demo done; still serving. `eventpulse incidents` lists incidents, Ctrl-C stops.");
    Ok(())
}

async fn serve(config: Config, with_demo: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let app = App::build(config).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        plugins = app.registry.list().len(),
        token_file = %app.config.admin.token_file.display(),
        "eventpulse serving"
    );
    let shutdown = CancellationToken::new();
    if with_demo {
        let (config, store) = (app.config.clone(), app.store.clone());
        tokio::spawn(async move {
            if let Err(e) = demo(config, store).await {
                tracing::error!(error = format!("{e:#}"), "demo failed");
            }
        });
    }
    let run = app.run(listener, shutdown.clone());
    tokio::pin!(run);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = &mut run => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; shutting down");
            shutdown.cancel();
            run.await
        }
        _ = term.recv() => {
            tracing::info!("terminated; shutting down");
            shutdown.cancel();
            run.await
        }
    }
}

/// One replayed event whose decision differs, as text.
fn render_difference(d: &eventpulse::replay::Difference) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let when = chrono::DateTime::from_timestamp_millis(d.time as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default();
    let about = d
        .alert
        .as_deref()
        .map(|a| format!(" {a}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "event {} ({}{about}, {when}):",
        d.event_id, d.event_kind
    );
    for c in &d.changes {
        let _ = writeln!(out, "  {}: then {} now {}", c.field, c.then, c.now);
    }
    if let Some(e) = &d.then_error {
        let _ = writeln!(out, "  failed then: {e}");
    }
    if let Some(e) = &d.now_error {
        let _ = writeln!(out, "  fails now: {e}");
    }
    for call in &d.calls {
        let _ = writeln!(out, "  refused: {} {}", call.capability, call.operation);
    }
    out
}
