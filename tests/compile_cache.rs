//! The compile cache: a component is compiled once per content and engine
//! configuration, reused afterwards, and a damaged cache entry is never
//! trusted (it is recompiled and rewritten).

use eventpulse::config::RuntimeConfig;
use eventpulse::runtime::{Runtime, RuntimeOptions};
use eventpulse_tests::component;

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

fn runtime(cache: &std::path::Path, pooling: bool) -> Runtime {
    Runtime::new(
        cache,
        &RuntimeOptions {
            pooling,
            ..RuntimeOptions::new(RuntimeConfig::default())
        },
    )
    .unwrap()
}

#[test]
fn compiled_once_per_content_and_engine_config() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(component("rule-cpu-autoscale")).unwrap();
    let rt = runtime(cache.path(), true);

    rt.compile("cpu.wasm", &bytes).unwrap();
    let first = cwasm_files(cache.path());
    assert_eq!(first.len(), 1, "one cache entry");
    let written = std::fs::metadata(&first[0]).unwrap().modified().unwrap();

    rt.compile("cpu.wasm", &bytes).unwrap();
    assert_eq!(cwasm_files(cache.path()), first, "reused, not recompiled");
    assert_eq!(
        std::fs::metadata(&first[0]).unwrap().modified().unwrap(),
        written
    );

    // The key is wasmtime's compatibility hash of the engine: the allocation
    // strategy does not change generated code, so the entry is shared.
    runtime(cache.path(), false)
        .compile("cpu.wasm", &bytes)
        .unwrap();
    assert_eq!(cwasm_files(cache.path()), first);

    // Other content, another entry.
    let other = std::fs::read(component("rule-hostile")).unwrap();
    rt.compile("hostile.wasm", &other).unwrap();
    assert_eq!(cwasm_files(cache.path()).len(), 2);
}

#[test]
fn a_damaged_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(component("rule-cpu-autoscale")).unwrap();
    let rt = runtime(cache.path(), true);
    rt.compile("cpu.wasm", &bytes).unwrap();
    let entry = cwasm_files(cache.path()).remove(0);
    std::fs::write(&entry, b"not a compiled component").unwrap();

    rt.compile("cpu.wasm", &bytes)
        .expect("recompiled instead of loading garbage");
    let rewritten = std::fs::read(&entry).unwrap();
    assert_ne!(rewritten, b"not a compiled component", "entry rewritten");
}
