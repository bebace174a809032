#!/usr/bin/env bash
# Keep the demo service busy for SECONDS (default 60): 4 clients asking for
# 200 ms of CPU each, in a loop.
set -euo pipefail
cd "$(dirname "$0")"
addr=$(docker-compose port app 8080)
end=$((SECONDS + ${1:-60}))
for _ in 1 2 3 4; do
    while ((SECONDS < end)); do curl -fsS "http://$addr/work?ms=200" >/dev/null || sleep 1; done &
done
wait
