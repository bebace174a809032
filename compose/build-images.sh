#!/usr/bin/env bash
# Build the demo images offline (no registry is needed): a static musl
# binary copied into FROM scratch images.
#   eventpulse-demo-app:latest   the service the scenario scales
#   eventpulse-demo-app:sick     its health check never passes
#   eventpulse-k3s-agent:latest  stand-in k3s worker node
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p eventpulse-demo-app --release --target "$target"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$root/target/$target/release/demo-app" "$root/compose/demo-app/Dockerfile" "$ctx/"
for spec in app:eventpulse-demo-app:latest sick:eventpulse-demo-app:sick k3s-agent:eventpulse-k3s-agent:latest; do
    DOCKER_CLI_HINTS=false docker build --quiet --target "${spec%%:*}" -t "${spec#*:}" "$ctx" >/dev/null 2> >(grep -v -e DEPRECATED -e "legacy builder" -e buildx -e "docs.docker.com" -e "^\s*$" >&2)
done
echo "built eventpulse-demo-app:latest, eventpulse-demo-app:sick, eventpulse-k3s-agent:latest"
