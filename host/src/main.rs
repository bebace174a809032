//! The `eventpulse` command: parses the CLI, loads config, starts logging
//! and calls into the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use eventpulse::app::App;
use eventpulse::config::Config;
use eventpulse::scaffold::{self, Kind};
use tokio_util::sync::CancellationToken;

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
    /// Run the host: HTTP API, plugin registry.
    Serve {
        /// Build the plugins in ./plugins into the plugin directory first.
        #[arg(long)]
        build_plugins: bool,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Plugin authoring.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
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
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Rule,
    Action,
    Notifier,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTPULSE_LOG")
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Plugin { command } => plugin(command, &config),
        Command::Migrate => runtime()?.block_on(async {
            eventpulse::store::Store::connect(&config.database_url).await?;
            tracing::info!(database = %config.database_url, "migrated");
            Ok(())
        }),
        Command::Serve { build_plugins } => {
            if build_plugins {
                let crates = scaffold::workspace_plugins(std::path::Path::new("plugins"))?;
                scaffold::build(&crates, &config.plugin_dir, None)?;
            }
            runtime()?.block_on(serve(config))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn plugin(command: PluginCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        PluginCommand::New { name, kind, dir } => {
            let kind = match kind {
                KindArg::Rule => Kind::Rule,
                KindArg::Action => Kind::Action,
                KindArg::Notifier => Kind::Notifier,
            };
            let path = scaffold::new_plugin(&dir, &name, kind)?;
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
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
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
    let run = app.run(listener, shutdown.clone());
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            shutdown.cancel();
            run.await
        }
    }
}
