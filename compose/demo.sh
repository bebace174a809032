#!/usr/bin/env bash
# Seed 000, end to end, offline: build the stack's images, start it with the
# HAProxy load balancer, put load on the service through it, and show what
# happened: per-replica CPU and request share before and after EventPulse
# scaled out, the incident's timeline, then the scale-in LowCPU brings once
# the load stops. Takes about two minutes; leaves nothing running.
#
#   compose/demo.sh            (needs docker-compose, a Docker Engine, and
#                               what build-stack.sh names)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-eventpulse-demo}
compose() { docker-compose -f "$here/docker-compose.yml" --profile offline "$@"; }

"$here/build-stack.sh"
cleanup() {
    compose --profile load down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
    docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker rm -f >/dev/null
}
trap cleanup EXIT
compose up -d

prom=$(compose port prometheus 9090)
api=$(compose port eventpulse 8080)
until curl -fsS "http://$api/healthz" >/dev/null 2>&1; do sleep 1; done
token=$(docker cp "$(compose ps -q eventpulse)":/data/admin.token - | tar -xO)

# query PROMQL: one line per replica (instance: value).
query() {
    curl -fsS "http://$prom/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
for r in sorted(json.load(sys.stdin)["data"]["result"], key=lambda r: r["metric"].get("instance", "")):
    print("  %-22s %6.2f" % (r["metric"].get("instance", "all"), float(r["value"][1])))'
}
replicas() { docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" --filter label=service=app --filter health=healthy | wc -l; }
cpu='rate(demo_app_cpu_seconds_total[10s])'
share='increase(demo_app_requests_total[15s]) / scalar(sum(increase(demo_app_requests_total[15s])))'

echo "== load on: 4 clients through the load balancer"
compose --profile load up -d load >/dev/null 2>&1
sleep 12
echo "CPU per replica (cores), one replica under load:"
query "$cpu"
echo "waiting for EventPulse to scale out ..."
until [ "$(replicas)" -ge 2 ]; do sleep 1; done
sleep 20
echo "CPU per replica (cores), after the scale-out:"
query "$cpu"
echo "share of the requests per replica, last 15 s:"
query "$share"

echo "== load off: LowCPU should bring the service back to one replica"
compose --profile load stop load >/dev/null 2>&1
until [ "$(replicas)" -le 1 ]; do sleep 1; done
echo "replicas: $(replicas)"

echo "== the incident"
docker exec "$(compose ps -q eventpulse)" /usr/bin/eventpulse incidents --limit 1
echo "== the actions"
curl -fsS -H "Authorization: Bearer $token" "http://$api/api/v1/actions" | python3 -c '
import json, sys, datetime
for a in reversed(json.load(sys.stdin)["actions"]):
    when = datetime.datetime.fromtimestamp(a["created_at"] / 1000, datetime.timezone.utc).strftime("%H:%M:%S")
    summary = json.loads(a["result"])["summary"] if a["result"] else a["last_error"]
    print("  %s  %s on %s: %s: %s" % (when, a["plugin"], a["target"], a["status"], summary))'
