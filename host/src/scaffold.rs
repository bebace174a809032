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

/// The SDK and the WIT contract this binary was built with, carried in
/// the binary: `plugin new` outside the EventPulse workspace writes them
/// into the new crate (`sdk/`, `wit/`), so it builds wherever the binary
/// is, with no checkout beside it and no registry that serves the SDK.
/// Paths are relative to the workspace root; the SDK's bindings read
/// `../wit`, which the same layout keeps true inside the new crate.
/// `embedded_sdk_is_complete` checks the list against the tree.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "sdk/src/__bindings.rs",
        include_str!("../../sdk/src/__bindings.rs"),
    ),
    (
        "sdk/src/__guest.rs",
        include_str!("../../sdk/src/__guest.rs"),
    ),
    ("sdk/src/arena.rs", include_str!("../../sdk/src/arena.rs")),
    (
        "sdk/src/context.rs",
        include_str!("../../sdk/src/context.rs"),
    ),
    ("sdk/src/lib.rs", include_str!("../../sdk/src/lib.rs")),
    (
        "sdk/src/message.rs",
        include_str!("../../sdk/src/message.rs"),
    ),
    ("sdk/src/model.rs", include_str!("../../sdk/src/model.rs")),
    (
        "sdk/src/testing.rs",
        include_str!("../../sdk/src/testing.rs"),
    ),
    ("wit/host.wit", include_str!("../../wit/host.wit")),
    ("wit/types.wit", include_str!("../../wit/types.wit")),
    ("wit/worlds.wit", include_str!("../../wit/worlds.wit")),
    (
        "wit/deps/README.md",
        include_str!("../../wit/deps/README.md"),
    ),
    (
        "wit/deps/cli/package.wit",
        include_str!("../../wit/deps/cli/package.wit"),
    ),
    (
        "wit/deps/clocks/package.wit",
        include_str!("../../wit/deps/clocks/package.wit"),
    ),
    (
        "wit/deps/filesystem/package.wit",
        include_str!("../../wit/deps/filesystem/package.wit"),
    ),
    (
        "wit/deps/http/package.wit",
        include_str!("../../wit/deps/http/package.wit"),
    ),
    (
        "wit/deps/io/package.wit",
        include_str!("../../wit/deps/io/package.wit"),
    ),
    (
        "wit/deps/random/package.wit",
        include_str!("../../wit/deps/random/package.wit"),
    ),
    (
        "wit/deps/sockets/package.wit",
        include_str!("../../wit/deps/sockets/package.wit"),
    ),
];

/// The SDK's manifest and the workspace's (for the versions the SDK
/// inherits).
const SDK_MANIFEST: &str = include_str!("../../sdk/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

/// Whether `dir` is the `plugins/` folder of an EventPulse checkout.
fn is_workspace_plugins(dir: &Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return false;
    };
    dir.file_name().is_some_and(|n| n == "plugins")
        && dir.parent().is_some_and(|root| {
            root.join("sdk/Cargo.toml").is_file() && root.join("wit/worlds.wit").is_file()
        })
}

/// Write the embedded SDK and WIT under `root` (`root/sdk`, `root/wit`),
/// the SDK's manifest made standalone: what it inherited from the
/// workspace (version, edition, dependency versions) written out.
fn write_sdk(root: &Path) -> anyhow::Result<()> {
    for (path, text) in SDK_FILES {
        let dest = root.join(path);
        std::fs::create_dir_all(dest.parent().expect("a file in a folder"))?;
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    }
    std::fs::write(root.join("sdk/Cargo.toml"), standalone_sdk_manifest()?)?;
    Ok(())
}

/// The SDK's `Cargo.toml` with every `workspace = true` resolved.
fn standalone_sdk_manifest() -> anyhow::Result<String> {
    let workspace: toml::Table = toml::from_str(WORKSPACE_MANIFEST)?;
    let ws = workspace
        .get("workspace")
        .and_then(|w| w.as_table())
        .context("the workspace manifest has no [workspace]")?;
    let inherited = |section: &str| ws.get(section).and_then(|p| p.as_table()).cloned();
    let (package, deps) = (
        inherited("package").unwrap_or_default(),
        inherited("dependencies").unwrap_or_default(),
    );
    let mut sdk: toml::Table = toml::from_str(SDK_MANIFEST)?;
    sdk.remove("lints");
    if let Some(toml::Value::Table(p)) = sdk.get_mut("package") {
        for (key, value) in p.iter_mut() {
            if is_inherited(value) {
                *value = package
                    .get(key)
                    .cloned()
                    .with_context(|| format!("package.{key} is not in [workspace.package]"))?;
            }
        }
        p.insert("publish".into(), false.into());
    }
    if let Some(toml::Value::Table(d)) = sdk.get_mut("dependencies") {
        for (name, value) in d.iter_mut() {
            if !is_inherited(value) {
                continue;
            }
            let mut resolved = match deps.get(name) {
                Some(toml::Value::String(version)) => {
                    toml::Table::from_iter([("version".to_owned(), version.clone().into())])
                }
                Some(toml::Value::Table(t)) => t.clone(),
                _ => bail!("dependency {name} is not in [workspace.dependencies]"),
            };
            // What the SDK adds to the inherited entry (features).
            if let toml::Value::Table(own) = value {
                for (k, v) in own.iter().filter(|(k, _)| *k != "workspace") {
                    resolved.insert(k.clone(), v.clone());
                }
            }
            *value = resolved.into();
        }
    }
    Ok(format!(
        "# The EventPulse SDK {}, written by `eventpulse plugin new` from the binary that\n\
         # scaffolded this crate, with the WIT contract it builds against in ../wit.\n\n{}",
        env!("CARGO_PKG_VERSION"),
        toml::to_string(&sdk)?
    ))
}

fn is_inherited(value: &toml::Value) -> bool {
    value
        .as_table()
        .and_then(|t| t.get("workspace"))
        .and_then(toml::Value::as_bool)
        == Some(true)
}

/// Create crate `name` in `dir`. Inside an EventPulse checkout's
/// `plugins/` it joins the workspace; anywhere else it is a workspace of
/// its own with the SDK and the WIT written into it (see [`SDK_FILES`]).
pub fn new_plugin(dir: &Path, name: &str, kind: Kind) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let root = dir.join(name);
    ensure!(!root.exists(), "{} already exists", root.display());
    std::fs::create_dir_all(root.join("src"))?;

    let (sdk_dep, serde_dep, lints, standalone) = if is_workspace_plugins(dir) {
        (
            "eventpulse-sdk.workspace = true".to_owned(),
            "serde_json.workspace = true",
            "\n[lints]\nworkspace = true\n",
            "",
        )
    } else {
        write_sdk(&root)?;
        std::fs::write(root.join(".gitignore"), "/target\n")?;
        (
            "eventpulse-sdk = { path = \"sdk\" }".to_owned(),
            "serde_json = \"1\"",
            "",
            STANDALONE,
        )
    };
    let kind_text = kind_name(kind);
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
/// `plugin.toml` into `out`; a Python plugin directory (see
/// [`new_python_plugin`]) is built with componentize-py instead. Returns
/// the installed `.wasm` paths.
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
        if let Some(kind) = python_kind(dir)? {
            installed.push(build_python(dir, kind, out)?);
            continue;
        }
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

fn check_name(name: &str) -> anyhow::Result<()> {
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "plugin name `{name}` must be lowercase letters, digits and `-`"
    );
    Ok(())
}

/// The Python helper modules, written beside a Python plugin's `app.py`
/// (see `sdk/python/`).
const PYTHON_HELPERS: &[(&str, &str)] = &[
    (
        "eventpulse_plugin.py",
        include_str!("../../sdk/python/eventpulse_plugin.py"),
    ),
    (
        "eventpulse_http.py",
        include_str!("../../sdk/python/eventpulse_http.py"),
    ),
];

/// The componentize-py this host is tested with; `plugin build` runs the
/// one named by `COMPONENTIZE_PY`, else `componentize-py` on
/// `PATH`.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Create the Python plugin `name` in `dir`: `app.py` (the plugin),
/// `pyproject.toml` (its kind, under `[tool.eventpulse]`), `plugin.toml`
/// (its manifest), the helper modules and the WIT contract (`wit/`), so
/// it builds with nothing but componentize-py.
pub fn new_python_plugin(dir: &Path, name: &str, kind: Kind) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let root = dir.join(name);
    ensure!(!root.exists(), "{} already exists", root.display());
    std::fs::create_dir_all(&root)?;
    let kind_text = kind_name(kind);
    std::fs::write(
        root.join("pyproject.toml"),
        format!(
            "[project]\nname = \"{name}\"\nversion = \"0.1.0\"\nrequires-python = \">=3.12\"\n\n\
             # Built into a component by `eventpulse plugin build` ({COMPONENTIZE_PY}).\n\
             [tool.eventpulse]\nkind = \"{kind_text}\"\n"
        ),
    )?;
    std::fs::write(
        root.join("app.py"),
        python_template(kind).replace("__PLUGIN_NAME__", name),
    )?;
    for (file, text) in PYTHON_HELPERS {
        std::fs::write(root.join(file), text)?;
    }
    for (path, text) in SDK_FILES.iter().filter(|(p, _)| p.starts_with("wit/")) {
        let dest = root.join(path);
        std::fs::create_dir_all(dest.parent().expect("a file in a folder"))?;
        std::fs::write(dest, text)?;
    }
    std::fs::write(root.join(".gitignore"), "__pycache__/\n")?;
    std::fs::write(
        root.join("plugin.toml"),
        format!(
            "# Manifest for the Python {kind_text} `{name}`: grants (none by default), limits, config.\n\
             # CPython runs inside the component: it needs more memory than a Rust plugin.\n\n\
             [limits]\nfuel = 50_000_000\ntimeout_ms = 500\nmemory_mb = 64\n\n[config]\n"
        ),
    )?;
    Ok(root)
}

/// The kind of the Python plugin in `dir`, if it is one (a
/// `pyproject.toml` with `[tool.eventpulse] kind`).
fn python_kind(dir: &Path) -> anyhow::Result<Option<Kind>> {
    let path = dir.join("pyproject.toml");
    if !path.is_file() {
        return Ok(None);
    }
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let Some(kind) = doc
        .get("tool")
        .and_then(|t| t.get("eventpulse"))
        .and_then(|e| e.get("kind"))
        .and_then(|k| k.as_str())
    else {
        return Ok(None);
    };
    Ok(Some(match kind {
        "rule" => Kind::Rule,
        "action" => Kind::Action,
        "notifier" => Kind::Notifier,
        other => bail!(
            "{}: [tool.eventpulse] kind `{other}` is not rule, action or notifier",
            path.display()
        ),
    }))
}

/// Build the Python plugin in `dir` with componentize-py into
/// `out/<name>.wasm` (+ its `plugin.toml`). The plugin's own `wit/` and
/// helper modules are used when it has them, else this binary's.
fn build_python(dir: &Path, kind: Kind, out: &Path) -> anyhow::Result<PathBuf> {
    // componentize-py runs in the staging directory: every path absolute.
    let dir = &std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    std::fs::create_dir_all(out)?;
    let out = &std::fs::canonicalize(out)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the plugin directory's name")?
        .to_owned();
    ensure!(dir.join("app.py").is_file(), "{}: no app.py", dir.display());
    let staging = tempfile_dir(out, &name)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, staging.join(path.file_name().expect("a file")))?;
        }
    }
    for (file, text) in PYTHON_HELPERS {
        if !staging.join(file).exists() {
            std::fs::write(staging.join(file), text)?;
        }
    }
    let wit = if dir.join("wit/worlds.wit").is_file() {
        dir.join("wit")
    } else {
        for (path, text) in SDK_FILES.iter().filter(|(p, _)| p.starts_with("wit/")) {
            let dest = staging.join(path);
            std::fs::create_dir_all(dest.parent().expect("a file in a folder"))?;
            std::fs::write(dest, text)?;
        }
        staging.join("wit")
    };
    let program = std::env::var("COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into());
    let wasm = staging.join(format!("{name}.wasm"));
    let status = Command::new(&program)
        .arg("-d")
        .arg(&wit)
        .args(["-w", kind_name(kind), "componentize", "app", "-p"])
        .arg(&staging)
        .arg("-o")
        .arg(&wasm)
        .current_dir(&staging)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| {
            format!(
                "running {program}: Python plugins are built with componentize-py \
                 (pip install {COMPONENTIZE_PY}, or name it in COMPONENTIZE_PY)"
            )
        })?;
    if !status.success() {
        bail!("componentize-py failed for {} ({status})", dir.display());
    }
    let plugin_toml = dir.join("plugin.toml");
    if plugin_toml.exists() {
        install(&plugin_toml, &out.join(format!("{name}.toml")))?;
    }
    let dest = out.join(format!("{name}.wasm"));
    install(&wasm, &dest)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(dest)
}

/// A fresh staging directory for building `name`, beside `out`'s files
/// but not loadable from it (a dot-directory).
fn tempfile_dir(out: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = out.join(format!(".build-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Rule => "rule",
        Kind::Action => "action",
        Kind::Notifier => "notifier",
    }
}

fn python_template(kind: Kind) -> &'static str {
    match kind {
        Kind::Rule => {
            r#""""`__PLUGIN_NAME__`: an EventPulse rule in Python."""

from eventpulse_plugin import Decision, Severity, rule


@rule(name="__PLUGIN_NAME__", description="describe what this rule decides",
      subscribe=[("alert.raised", {})])
class RulePlugin:
    def decide(self, event, cx):
        name = event.alert.name if event.alert else "event"
        cx.info(f"{name} seen")
        return Decision.none().with_note(f"{name} seen by __PLUGIN_NAME__")
"#
        }
        Kind::Action => {
            r#""""`__PLUGIN_NAME__`: an EventPulse runbook action in Python."""

from eventpulse_plugin import action


@action(name="__PLUGIN_NAME__", description="describe what this action converges")
class ActionPlugin:
    def run(self, event, request, cx):
        cx.info(f"running on {request.target}")
        return f"__PLUGIN_NAME__ done on {request.target}", {"target": request.target}
"#
        }
        Kind::Notifier => {
            r#""""`__PLUGIN_NAME__`: an EventPulse notifier in Python."""

from eventpulse_plugin import notifier


@notifier(name="__PLUGIN_NAME__", description="describe where this notifier delivers")
class NotifierPlugin:
    def deliver(self, event, request, cx):
        cx.info(f"[{request.severity.name}] {request.title}")
        return "logged"
"#
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `sdk/src` and `wit/` is in [`SDK_FILES`], so a file
    /// added to either cannot be left out of scaffolded crates.
    #[test]
    fn embedded_sdk_is_complete() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        fn walk(dir: &Path, root: &Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, found);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    found.push(rel.to_str().unwrap().to_owned());
                }
            }
        }
        let mut on_disk = Vec::new();
        walk(&root.join("sdk/src"), &root, &mut on_disk);
        walk(&root.join("wit"), &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = SDK_FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    /// The standalone SDK manifest inherits nothing and names the
    /// workspace's versions.
    #[test]
    fn the_sdk_manifest_stands_alone() {
        let text = standalone_sdk_manifest().unwrap();
        assert!(!text.contains("workspace"), "{text}");
        let doc: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(doc["package"]["name"].as_str(), Some("eventpulse-sdk"));
        assert_eq!(
            doc["package"]["version"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(
            doc["dependencies"]["wit-bindgen"]["version"].is_str(),
            "{text}"
        );
        assert!(doc.get("lints").is_none());
    }
}
