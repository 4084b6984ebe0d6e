#!/usr/bin/env bash
# Idempotently install the benchmark's external tools from Debian packages:
#   wrk (HTTP load generator), redis-server + redis-benchmark (redis-tools),
#   PostgreSQL server binaries + pgbench + psql (postgresql), setpriv/runuser
#   (util-linux: PostgreSQL must not run as root) and procps (ps).
# Safe to run repeatedly: apt-get is only invoked when something is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

have wrk || need+=(wrk)
have redis-server || need+=(redis-server)
have redis-benchmark || need+=(redis-tools)
have ps || need+=(procps)
{ have setpriv && have runuser; } || need+=(util-linux)
# PostgreSQL: server binaries (initdb, postgres, pgbench) and psql live in
# /usr/lib/postgresql/<ver>/bin; the `postgresql` package pulls in both.
if ! ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pgbench /usr/lib/postgresql/*/bin/psql >/dev/null 2>&1; then
  need+=(postgresql)
fi

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench-deps: missing ${need[*]} and not root; install them manually" >&2
    exit 1
  fi
  echo "bench-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian's packages may start system instances (redis on :6379, a PostgreSQL
# "main" cluster on :5432) where an init system exists; the bench starts its
# own on free ports, so stop any the install just started (errors ignored:
# usually there is no init system here and nothing was started).
for pkg in "${need[@]}"; do
  case "$pkg" in
    redis-server) (service redis-server stop || /etc/init.d/redis-server stop) >/dev/null 2>&1 || true ;;
    postgresql) (service postgresql stop || /etc/init.d/postgresql stop) >/dev/null 2>&1 || true ;;
  esac
done

# PostgreSQL refuses to run as root: make sure an unprivileged user exists.
if ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres 2>/dev/null || true
fi

pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
echo "bench-deps: wrk=$(command -v wrk) redis-server=$(command -v redis-server) redis-benchmark=$(command -v redis-benchmark) postgres=${pgbin:-none}" >&2
