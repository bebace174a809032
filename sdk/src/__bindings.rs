//! Generated guest bindings for the three plugin worlds. Hidden from plugin
//! authors: the SDK converts between these and its own types.
//!
//! The `rule` world generates the shared interfaces; `action` and `notifier`
//! reuse them through `with` so one Rust type exists per WIT type.
#![allow(missing_docs, unsafe_code, clippy::all)]

pub mod rule {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rule",
        pub_export_macro: true,
        export_macro_name: "__export_rule",
        default_bindings_module: "eventpulse_sdk::__bindings::rule",
        runtime_path: "eventpulse_sdk::__wit_bindgen_rt",
        with: {
            "wasi:io/poll@0.2.12": generate,
            "wasi:io/error@0.2.12": generate,
            "wasi:io/streams@0.2.12": generate,
            "wasi:clocks/monotonic-clock@0.2.12": generate,
            "wasi:http/types@0.2.12": generate,
            "wasi:http/outgoing-handler@0.2.12": generate,
        },
    });
}

pub mod action {
    wit_bindgen::generate!({
        path: "../wit",
        world: "action",
        pub_export_macro: true,
        export_macro_name: "__export_action",
        default_bindings_module: "eventpulse_sdk::__bindings::action",
        runtime_path: "eventpulse_sdk::__wit_bindgen_rt",
        with: {
            "eventpulse:plugin/types@0.1.0": crate::__bindings::rule::eventpulse::plugin::types,
            "eventpulse:plugin/log@0.1.0": crate::__bindings::rule::eventpulse::plugin::log,
            "eventpulse:plugin/clock@0.1.0": crate::__bindings::rule::eventpulse::plugin::clock,
            "eventpulse:plugin/state@0.1.0": crate::__bindings::rule::eventpulse::plugin::state,
            "eventpulse:plugin/config@0.1.0": crate::__bindings::rule::eventpulse::plugin::config,
            "eventpulse:plugin/docker@0.1.0": crate::__bindings::rule::eventpulse::plugin::docker,
            "eventpulse:plugin/kube@0.1.0": crate::__bindings::rule::eventpulse::plugin::kube,
            "eventpulse:plugin/smtp@0.1.0": crate::__bindings::rule::eventpulse::plugin::smtp,
            "wasi:io/poll@0.2.12": crate::__bindings::rule::wasi::io::poll,
            "wasi:io/error@0.2.12": crate::__bindings::rule::wasi::io::error,
            "wasi:io/streams@0.2.12": crate::__bindings::rule::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::__bindings::rule::wasi::clocks::monotonic_clock,
            "wasi:http/types@0.2.12": crate::__bindings::rule::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::__bindings::rule::wasi::http::outgoing_handler,
        },
    });
}

pub mod notifier {
    wit_bindgen::generate!({
        path: "../wit",
        world: "notifier",
        pub_export_macro: true,
        export_macro_name: "__export_notifier",
        default_bindings_module: "eventpulse_sdk::__bindings::notifier",
        runtime_path: "eventpulse_sdk::__wit_bindgen_rt",
        with: {
            "eventpulse:plugin/types@0.1.0": crate::__bindings::rule::eventpulse::plugin::types,
            "eventpulse:plugin/log@0.1.0": crate::__bindings::rule::eventpulse::plugin::log,
            "eventpulse:plugin/clock@0.1.0": crate::__bindings::rule::eventpulse::plugin::clock,
            "eventpulse:plugin/state@0.1.0": crate::__bindings::rule::eventpulse::plugin::state,
            "eventpulse:plugin/config@0.1.0": crate::__bindings::rule::eventpulse::plugin::config,
            "eventpulse:plugin/docker@0.1.0": crate::__bindings::rule::eventpulse::plugin::docker,
            "eventpulse:plugin/kube@0.1.0": crate::__bindings::rule::eventpulse::plugin::kube,
            "eventpulse:plugin/smtp@0.1.0": crate::__bindings::rule::eventpulse::plugin::smtp,
            "wasi:io/poll@0.2.12": crate::__bindings::rule::wasi::io::poll,
            "wasi:io/error@0.2.12": crate::__bindings::rule::wasi::io::error,
            "wasi:io/streams@0.2.12": crate::__bindings::rule::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::__bindings::rule::wasi::clocks::monotonic_clock,
            "wasi:http/types@0.2.12": crate::__bindings::rule::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::__bindings::rule::wasi::http::outgoing_handler,
        },
    });
}

pub use rule::eventpulse::plugin::types;
