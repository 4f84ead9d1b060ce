#!/usr/bin/env bash
# Zero-downtime upgrade: migrate once, then restart the instances one at a time while traffic flows.
#
# For each instance: mark it `down` in nginx's upstreams file and reload nginx (new requests go to
# the others; requests already running finish), restart it (SIGTERM: in-flight requests and
# streams get COCOON_SHUTDOWN_GRACE_SECONDS), wait until its /ready answers 200, put it back.
# Migrations are backward compatible for one version, so the instances not yet restarted keep
# serving on the new schema.
#
# Usage: deploy/rolling-restart.sh [PORT ...]   (default: every port in the upstreams file)
# Environment (defaults fit the shipped units and nginx files):
#   UPSTREAMS      nginx upstreams file      (/etc/nginx/conf.d/cocoon-platform-upstreams.conf)
#   MIGRATE        command run once first    (systemctl restart cocoon-platform-migrate)
#   RESTART        command for one instance, {port} replaced (systemctl restart cocoon-platform@{port})
#   RELOAD         command reloading nginx   (systemctl reload nginx)
#   READY_TIMEOUT  seconds to wait for /ready (60)
#   SETTLE_SECONDS seconds after each nginx reload (2): the reload signal returns at once, and old
#                  nginx workers keep routing by the old list until the new workers take over
set -euo pipefail

UPSTREAMS=${UPSTREAMS:-/etc/nginx/conf.d/cocoon-platform-upstreams.conf}
MIGRATE=${MIGRATE:-systemctl restart cocoon-platform-migrate}
RESTART=${RESTART:-systemctl restart cocoon-platform@\{port\}}
RELOAD=${RELOAD:-systemctl reload nginx}
READY_TIMEOUT=${READY_TIMEOUT:-60}
SETTLE_SECONDS=${SETTLE_SECONDS:-2}

ports=("$@")
if [ ${#ports[@]} -eq 0 ]; then
  mapfile -t ports < <(sed -nE 's/^\s*server\s+127\.0\.0\.1:([0-9]+).*/\1/p' "$UPSTREAMS")
fi
[ ${#ports[@]} -gt 0 ] || { echo "no instances found in $UPSTREAMS" >&2; exit 1; }

mark() {  # mark PORT down|up
  if [ "$2" = down ]; then
    sed -i -E "/127\.0\.0\.1:$1[ ;]/{/ down;/!s/;\s*$/ down;/}" "$UPSTREAMS"
  else
    sed -i -E "/127\.0\.0\.1:$1[ ;]/s/ down;/;/" "$UPSTREAMS"
  fi
  sh -c "$RELOAD"
  sleep "$SETTLE_SECONDS"
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null "http://127.0.0.1:$1/ready"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "instance on port $1 not ready after ${READY_TIMEOUT}s; it stays out of nginx" >&2
      return 1
    fi
    sleep 0.5
  done
}

echo "migrating"
sh -c "$MIGRATE"
for port in "${ports[@]}"; do
  echo "restarting the instance on port $port"
  mark "$port" down
  sh -c "${RESTART//\{port\}/$port}"
  wait_ready "$port"
  mark "$port" up
done
echo "all ${#ports[@]} instances restarted"
