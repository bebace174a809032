//! Benchmark baseline: the cpu-autoscale rule run the way StackStorm runs an
//! action, one process per event. Reads an event (SDK JSON) on stdin, writes
//! the decision as JSON on stdout.

use eventpulse_sdk::testing::FakeHost;
use eventpulse_sdk::{Event, Rule};
use rule_cpu_autoscale::CpuAutoscale;

fn main() {
    let event: Event =
        serde_json::from_reader(std::io::stdin().lock()).expect("event JSON on stdin");
    let host = FakeHost::new().at(1_000_000);
    let decision = CpuAutoscale
        .decide(&event, &host.context())
        .expect("decision");
    serde_json::to_writer(std::io::stdout().lock(), &decision).expect("stdout");
}
