//! Host bindings for `wit/`, generated once. The `rule` world generates the
//! shared types and host interfaces; `action` and `notifier` reuse them.

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

pub mod action {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "action",
        exports: { default: async },
        with: {
            "eventpulse:plugin": super::eventpulse::plugin,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "notifier",
        exports: { default: async },
        with: {
            "eventpulse:plugin": super::eventpulse::plugin,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use self::eventpulse::plugin::types;
