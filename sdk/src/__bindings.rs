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
        },
    });
}

pub use rule::eventpulse::plugin::types;
