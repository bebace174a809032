#!/usr/bin/env bash
# Build every image of the compose demo offline (no registry is needed):
#   the demo-app images        (build-images.sh: static musl binary)
#   eventpulse:demo            the host binary + the first-party plugins
#                              with the demo manifests in compose/plugins/
#   eventpulse-prometheus:demo, eventpulse-alertmanager:demo
#                              Debian's prometheus / prometheus-alertmanager
#   eventpulse-haproxy:demo    Debian's haproxy (the offline profile's load
#                              balancer)
#
# Host binaries go into FROM scratch images together with the shared
# libraries `ldd` lists. DEMO_EVENTPULSE_BIN names an already built eventpulse
# binary; otherwise it is built (debug, like the README's first command).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/compose/build-images.sh"

for tool in prometheus prometheus-alertmanager haproxy ldd; do
    command -v "$tool" >/dev/null || { echo "build-stack.sh: $tool is needed (apt-get install prometheus prometheus-alertmanager haproxy)" >&2; exit 1; }
done
bin=${DEMO_EVENTPULSE_BIN:-}
if [[ -z $bin ]]; then
    cargo build --quiet --manifest-path "$root/Cargo.toml" -p eventpulse
    bin="$root/target/debug/eventpulse"
fi

# image TAG BINARY [SRC:DEST ...]: BINARY as /usr/bin/NAME (the entry
# point), its libraries, and extra files or directories.
image() {
    local tag=$1 binary=$2 ctx lib pair
    shift 2
    ctx=$(mktemp -d)
    mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/data"
    cp "$binary" "$ctx/rootfs/usr/bin/"
    for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
        mkdir -p "$ctx/rootfs$(dirname "$lib")"
        cp -L "$lib" "$ctx/rootfs$lib"
    done
    for pair in "$@"; do
        mkdir -p "$ctx/rootfs${pair#*:}"
        cp -rL "${pair%%:*}/." "$ctx/rootfs${pair#*:}/"
    done
    printf '%s\n' 'FROM scratch' 'COPY rootfs/ /' 'ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu' \
        "ENTRYPOINT [\"/usr/bin/$(basename "$binary")\"]" >"$ctx/Dockerfile"
    DOCKER_CLI_HINTS=false docker build --quiet -t "$tag" "$ctx" >/dev/null 2> >(grep -v -e DEPRECATED -e "legacy builder" -e buildx -e "docs.docker.com" -e "^\s*$" >&2)
    rm -rf "$ctx"
}

# The plugins the demo runs, with its manifests.
plugins=$(mktemp -d)
trap 'rm -rf "$plugins"' EXIT
"$bin" plugin build --out "$plugins/all" "$root/plugins/rule-cpu-autoscale" \
    "$root/plugins/action-docker-scale" "$root/plugins/notifier-log" >/dev/null
mkdir "$plugins/demo"
for manifest in "$root"/compose/plugins/*.toml; do
    name=$(basename "$manifest" .toml)
    cp "$plugins/all/$name.wasm" "$manifest" "$plugins/demo/"
done

image eventpulse:demo "$bin" "$plugins/demo:/plugins"
image eventpulse-prometheus:demo "$(command -v prometheus)" /usr/share/prometheus/web:/usr/share/prometheus/web
image eventpulse-alertmanager:demo "$(command -v prometheus-alertmanager)" /usr/share/prometheus/alertmanager:/usr/share/prometheus/alertmanager
image eventpulse-haproxy:demo "$(command -v haproxy)"
echo "built eventpulse:demo, eventpulse-prometheus:demo, eventpulse-alertmanager:demo, eventpulse-haproxy:demo"
