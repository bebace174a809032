//! Host bindings for `wit/`, generated once from the `rule` world: the
//! shared types and the host interfaces every world imports. The exports
//! are called through `Plugin::invoke` by export index (see `plugin.rs`),
//! so the `action` and `notifier` worlds need no bindings of their own.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule",
    imports: {
        "eventpulse:plugin/docker": async,
        "eventpulse:plugin/kube": async,
        "eventpulse:plugin/smtp": async,
        default: trappable,
    },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use self::eventpulse::plugin::types;
