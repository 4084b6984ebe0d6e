#!/usr/bin/env bash
# Idempotently install the benchmark's external tools from Debian packages:
#   wrk (HTTP load generator), redis-server + redis-benchmark (redis-tools),
#   PostgreSQL server binaries + pgbench (postgresql, postgresql-contrib on
#   older releases), and procps (ps) for process checks.
# Safe to run repeatedly: apt-get is only invoked when something is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

have wrk || need+=(wrk)
have redis-server || need+=(redis-server)
have redis-benchmark || need+=(redis-tools)
have ps || need+=(procps)
have runuser || need+=(util-linux)
# PostgreSQL: server binaries live in /usr/lib/postgresql/<ver>/bin.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if ! have pgbench && ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1; then
  need+=(postgresql-client postgresql-contrib)
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

# Debian's redis-server package starts a system instance on :6379; the bench
# starts its own on a free port, so stop the system one if it was just started
# by the install (ignore failures: there is usually no init system here).
if [ "${#need[@]}" -gt 0 ] && printf '%s\n' "${need[@]}" | grep -qx redis-server; then
  (service redis-server stop || /etc/init.d/redis-server stop) >/dev/null 2>&1 || true
fi

# PostgreSQL refuses to run as root: make sure an unprivileged user exists.
if ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres 2>/dev/null || true
fi

pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
echo "bench-deps: wrk=$(command -v wrk) redis-server=$(command -v redis-server) redis-benchmark=$(command -v redis-benchmark) postgres=${pgbin:-none}" >&2
