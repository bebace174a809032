//! `eventpulse plugin new` and `eventpulse plugin build`: scaffold a plugin
//! crate, and build crates to wasm32-wasip2 components installed into a
//! plugin directory (`name.wasm` + `name.toml`, each written atomically so a
//! running host never loads half a file).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

/// What a scaffolded plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A rule.
    Rule,
    /// A runbook action.
    Action,
    /// A notifier.
    Notifier,
}

/// The SDK this binary was built with, for crates scaffolded outside the
/// EventPulse workspace.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// Create crate `name` in `dir`. Inside the EventPulse workspace's
/// `plugins/` it joins the workspace; elsewhere it is standalone with a
/// path dependency on the SDK.
pub fn new_plugin(dir: &Path, name: &str, kind: Kind) -> anyhow::Result<PathBuf> {
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "plugin name `{name}` must be lowercase letters, digits and `-`"
    );
    let root = dir.join(name);
    ensure!(!root.exists(), "{} already exists", root.display());
    std::fs::create_dir_all(root.join("src"))?;

    let sdk = std::fs::canonicalize(SDK_DIR).context("locating the EventPulse SDK")?;
    let in_workspace = std::fs::canonicalize(dir)
        .ok()
        .is_some_and(|d| d == sdk.with_file_name("plugins"));
    let (sdk_dep, serde_dep, lints, standalone) = if in_workspace {
        (
            "eventpulse-sdk.workspace = true".to_owned(),
            "serde_json.workspace = true",
            "\n[lints]\nworkspace = true\n",
            "",
        )
    } else {
        (
            format!(
                "eventpulse-sdk = {{ path = {:?} }}",
                sdk.display().to_string()
            ),
            "serde_json = \"1\"",
            "",
            STANDALONE,
        )
    };
    let kind_text = match kind {
        Kind::Rule => "rule",
        Kind::Action => "action",
        Kind::Notifier => "notifier",
    };
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\n{sdk_dep}\n{serde_dep}\n{lints}{standalone}"
        ),
    )?;
    std::fs::write(
        root.join("src/lib.rs"),
        template(kind).replace("__PLUGIN_NAME__", name),
    )?;
    std::fs::write(
        root.join("plugin.toml"),
        format!(
            "# Manifest for the {kind_text} `{name}`: grants (none by default), limits, config.\n\n\
             [limits]\nfuel = 10_000_000\ntimeout_ms = 200\nmemory_mb = 16\n\n[config]\n"
        ),
    )?;
    Ok(root)
}

const STANDALONE: &str = "\n# A workspace of its own, with the profile `eventpulse plugin build` uses.\n\
[workspace]\n\n[profile.plugin]\ninherits = \"release\"\nopt-level = 3\nlto = true\nstrip = true\n\
codegen-units = 1\npanic = \"abort\"\n";

fn template(kind: Kind) -> &'static str {
    match kind {
        Kind::Rule => {
            r#"//! `__PLUGIN_NAME__`: an EventPulse rule.

use eventpulse_sdk::{Context, Decision, Error, Event, Rule};

#[derive(Default)]
pub struct Plugin;

impl Rule for Plugin {
    fn description(&self) -> String {
        "describe what this rule decides".into()
    }

    fn decide(&self, event: &Event, cx: &Context<'_>) -> Result<Decision, Error> {
        let name = event.alert.as_ref().map(|a| a.name.as_str()).unwrap_or("event");
        cx.info(&format!("{name} seen"));
        Ok(Decision::none().note(format!("{name} seen by __PLUGIN_NAME__")))
    }
}

eventpulse_sdk::export_rule!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use eventpulse_sdk::AlertStatus;
    use eventpulse_sdk::testing::{FakeHost, alert_event};

    #[test]
    fn notes_the_alert() {
        let host = FakeHost::new();
        let event = alert_event("Demo", AlertStatus::Firing, &[("service", "app")]);
        let decision = Plugin.decide(&event, &host.context()).unwrap();
        assert!(decision.is_empty());
        assert_eq!(decision.note.as_deref(), Some("Demo seen by __PLUGIN_NAME__"));
    }
}
"#
        }
        Kind::Action => {
            r#"//! `__PLUGIN_NAME__`: an EventPulse runbook action.

use eventpulse_sdk::{Action, ActionRequest, ActionResult, Context, Error, Event};

#[derive(Default)]
pub struct Plugin;

impl Action for Plugin {
    fn description(&self) -> String {
        "describe what this action converges".into()
    }

    fn run(&self, _event: &Event, request: &ActionRequest, cx: &Context<'_>) -> Result<ActionResult, Error> {
        cx.info(&format!("running on {}", request.target));
        Ok(ActionResult {
            summary: format!("__PLUGIN_NAME__ done on {}", request.target),
            details: serde_json::json!({ "target": request.target }),
        })
    }
}

eventpulse_sdk::export_action!(Plugin);
"#
        }
        Kind::Notifier => {
            r#"//! `__PLUGIN_NAME__`: an EventPulse notifier.

use eventpulse_sdk::{Context, Delivery, Error, Event, Notifier, NotificationRequest};

#[derive(Default)]
pub struct Plugin;

impl Notifier for Plugin {
    fn description(&self) -> String {
        "describe where this notifier delivers".into()
    }

    fn deliver(&self, _event: &Event, request: &NotificationRequest, cx: &Context<'_>) -> Result<Delivery, Error> {
        cx.info(&format!("[{:?}] {}", request.severity, request.title));
        Ok(Delivery { remote_id: None, detail: "logged".into() })
    }
}

eventpulse_sdk::export_notifier!(Plugin);
"#
        }
    }
}

/// Every crate directory under `plugins` (those with a `Cargo.toml`).
pub fn workspace_plugins(plugins: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut crates = Vec::new();
    for entry in
        std::fs::read_dir(plugins).with_context(|| format!("reading {}", plugins.display()))?
    {
        let path = entry?.path();
        if path.join("Cargo.toml").exists() {
            crates.push(path);
        }
    }
    crates.sort();
    Ok(crates)
}

/// Build each crate to a wasm32-wasip2 component and install it with its
/// `plugin.toml` into `out`. Returns the installed `.wasm` paths.
///
/// On a fresh machine the `wasm32-wasip2` standard library is usually
/// missing; with rustup present it is added first (a few seconds).
/// `target_dir` defaults to `target/plugins` of each crate's workspace.
pub fn build(
    crates: &[PathBuf],
    out: &Path,
    target_dir: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    ensure_wasm_target();
    let mut installed = Vec::new();
    for dir in crates {
        let manifest = dir.join("Cargo.toml");
        let name = crate_name(&manifest)?;
        let target_dir = match target_dir {
            Some(t) => t.to_owned(),
            None => workspace_target_dir(dir)?,
        };
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "plugin",
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("building {} failed ({status})", dir.display());
        }
        let wasm = target_dir
            .join("wasm32-wasip2/plugin")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let plugin_toml = dir.join("plugin.toml");
        if plugin_toml.exists() {
            install(&plugin_toml, &out.join(format!("{name}.toml")))?;
        }
        let dest = out.join(format!("{name}.wasm"));
        install(&wasm, &dest)?;
        installed.push(dest);
    }
    Ok(installed)
}

/// `<workspace>/target/plugins`: a target directory of its own, so building
/// plugins never waits on (or invalidates) the host's build.
fn workspace_target_dir(crate_dir: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "locate-project",
            "--workspace",
            "--message-format",
            "plain",
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .output()
        .context("running cargo locate-project")?;
    ensure!(
        output.status.success(),
        "cargo locate-project failed for {}",
        crate_dir.display()
    );
    let root = PathBuf::from(String::from_utf8(output.stdout)?.trim());
    Ok(root
        .parent()
        .unwrap_or(Path::new("."))
        .join("target/plugins"))
}

fn crate_name(manifest: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no package name", manifest.display()))
}

/// Copy via a temporary file and rename, so readers see all or nothing.
fn install(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension("partial");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// Add the `wasm32-wasip2` target through rustup if it is not installed.
/// Without rustup nothing happens and cargo's own error explains.
fn ensure_wasm_target() {
    let Ok(listed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return;
    };
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return;
    }
    tracing::info!("adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
    match Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(status = %s, "rustup target add wasm32-wasip2 failed"),
        Err(e) => tracing::warn!(error = %e, "could not run rustup"),
    }
}
