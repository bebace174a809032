//! # eventpulse-sdk
//!
//! Write EventPulse rules, runbook actions and notifiers in plain Rust. A
//! plugin implements one trait ([`Rule`], [`Action`] or [`Notifier`]) and calls
//! one export macro; the SDK turns it into a WebAssembly component for the
//! EventPulse host (`cargo build --target wasm32-wasip2`). The generated
//! WIT bindings stay inside the SDK.
//!
//! ```no_run
//! use eventpulse_sdk::{Context, Decision, Error, Event, Rule};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Rule for Echo {
//!     fn decide(&self, event: &Event, cx: &Context<'_>) -> Result<Decision, Error> {
//!         cx.info(&format!("saw {}", event.kind));
//!         Ok(Decision::none())
//!     }
//! }
//!
//! eventpulse_sdk::export_rule!(Echo);
//! ```
//!
//! Plugins are unit-tested natively with [`testing::FakeHost`], which stands
//! in for the host's capabilities (clock, state, config, log).
//!
//! ## Layout
//!
//! - `model`: the event, decision and request types plugins read and build.
//! - `context`: [`Context`], the capabilities the host lends a plugin.
//! - `testing`: fake capabilities for native `cargo test`.
//! - `arena`: the allocator a component uses.
//! - `guest` (hidden): conversions between these types and the WIT bindings,
//!   and the glue the export macros expand to.
#![deny(missing_docs)]

// The generated bindings name the runtime through this crate, so that plugins
// need no direct dependency on wit-bindgen.
extern crate self as eventpulse_sdk;

pub mod arena;
mod context;
pub mod message;
mod model;
pub mod testing;

#[doc(hidden)]
pub mod __bindings;
#[doc(hidden)]
pub mod __guest;
#[doc(hidden)]
pub use wit_bindgen::rt as __wit_bindgen_rt;

/// A component's allocator (see [`arena`]); std's allocator in native tests
/// and with the `system-allocator` feature.
#[cfg(all(
    target_family = "wasm",
    not(target_feature = "atomics"),
    not(feature = "system-allocator")
))]
#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

pub use context::{
    CapabilityError, Container, ContainerSpec, Context, DockerOp, Host, HttpRequest, HttpResponse,
    LogLevel, Mail, Node,
};
pub use model::*;

/// The WIT package version this SDK speaks; the host refuses plugins built
/// against an incompatible one.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// A rule: a pure function of (event, plugin state) to a decision.
///
/// A fresh value is made with [`Default`] for every invocation: keep
/// anything that must outlive one event in [`Context::state_set`].
pub trait Rule: Default {
    /// One line saying what the rule does (shown by the admin API).
    fn description(&self) -> String {
        String::new()
    }

    /// The events this rule wants. Defaults to every `alert.raised`.
    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::kind(ALERT_RAISED)]
    }

    /// The events this rule wants, when that depends on its `[config]`
    /// (read when the plugin is loaded, and again whenever its manifest
    /// changes). Defaults to [`Rule::subscriptions`].
    fn subscriptions_in(&self, _cx: &Context<'_>) -> Vec<Subscription> {
        self.subscriptions()
    }

    /// Decide what an event means.
    fn decide(&self, event: &Event, cx: &Context<'_>) -> Result<Decision, Error>;

    /// A timer this rule set with [`Context::set_timer`] came due. `event`
    /// carries the correlation, labels and alert of the event being handled
    /// when it was set (and the incident its decision touched).
    fn on_timer(
        &self,
        _event: &Event,
        _timer: &Timer,
        _cx: &Context<'_>,
    ) -> Result<Decision, Error> {
        Ok(Decision::none())
    }

    /// An action this rule asked for completed.
    fn on_action_completed(
        &self,
        _event: &Event,
        _outcome: &ActionOutcome,
        _cx: &Context<'_>,
    ) -> Result<Decision, Error> {
        Ok(Decision::none())
    }

    /// An action this rule asked for failed: the place for compensation.
    fn on_action_failed(
        &self,
        _event: &Event,
        _outcome: &ActionOutcome,
        _cx: &Context<'_>,
    ) -> Result<Decision, Error> {
        Ok(Decision::none())
    }
}

/// A runbook action: changes the world through granted capabilities.
///
/// Actions must be convergent ("ensure N replicas"), since the host may run
/// the same `action_id` again after a crash or a retry.
pub trait Action: Default {
    /// One line saying what the action does.
    fn description(&self) -> String {
        String::new()
    }

    /// Run the request. `event` is the `action.requested` event.
    fn run(
        &self,
        event: &Event,
        request: &ActionRequest,
        cx: &Context<'_>,
    ) -> Result<ActionResult, Error>;
}

/// A notifier: delivers a notification to people.
pub trait Notifier: Default {
    /// One line saying what the notifier does.
    fn description(&self) -> String {
        String::new()
    }

    /// Deliver one notification.
    fn deliver(
        &self,
        event: &Event,
        request: &NotificationRequest,
        cx: &Context<'_>,
    ) -> Result<Delivery, Error>;
}

/// Export a [`Rule`] implementation as this component's rule.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__bindings::rule::exports::eventpulse::plugin::rule_plugin as __wit;
            use $crate::__bindings::types as __t;

            struct __EventPulseRule;

            impl __wit::Guest for __EventPulseRule {
                fn describe() -> __t::PluginInfo {
                    $crate::__guest::describe_rule::<$rule>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
                fn decide(event: __t::Event) -> Result<__t::Decision, __t::PluginError> {
                    $crate::__guest::decide::<$rule>(event)
                }
                fn on_action_completed(
                    event: __t::Event,
                    outcome: __t::ActionOutcome,
                ) -> Result<__t::Decision, __t::PluginError> {
                    $crate::__guest::on_action_completed::<$rule>(event, outcome)
                }
                fn on_action_failed(
                    event: __t::Event,
                    outcome: __t::ActionOutcome,
                ) -> Result<__t::Decision, __t::PluginError> {
                    $crate::__guest::on_action_failed::<$rule>(event, outcome)
                }
            }

    $crate::__export_rule_impl!(__EventPulseRule with_types_in $crate::__bindings::rule);
        };
    };
}

/// Export an [`Action`] implementation as this component's action.
#[macro_export]
macro_rules! export_action {
    ($action:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__bindings::action::exports::eventpulse::plugin::action_plugin as __wit;
            use $crate::__bindings::types as __t;

            struct __EventPulseAction;

            impl __wit::Guest for __EventPulseAction {
                fn describe() -> __t::PluginInfo {
                    $crate::__guest::describe_action::<$action>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
                fn run(
                    event: __t::Event,
                    request: __t::ActionRequest,
                ) -> Result<__t::ActionResult, __t::PluginError> {
                    $crate::__guest::run::<$action>(event, request)
                }
            }

            $crate::__export_action_impl!(__EventPulseAction with_types_in $crate::__bindings::action);
        };
    };
}

/// Export a [`Notifier`] implementation as this component's notifier.
#[macro_export]
macro_rules! export_notifier {
    ($notifier:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__bindings::notifier::exports::eventpulse::plugin::notifier_plugin as __wit;
            use $crate::__bindings::types as __t;

            struct __EventPulseNotifier;

            impl __wit::Guest for __EventPulseNotifier {
                fn describe() -> __t::PluginInfo {
                    $crate::__guest::describe_notifier::<$notifier>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
                fn deliver(
                    event: __t::Event,
                    request: __t::NotificationRequest,
                ) -> Result<__t::Delivery, __t::PluginError> {
                    $crate::__guest::deliver::<$notifier>(event, request)
                }
            }

            $crate::__export_notifier_impl!(__EventPulseNotifier with_types_in $crate::__bindings::notifier);
        };
    };
}
