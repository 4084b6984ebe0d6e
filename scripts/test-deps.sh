#!/usr/bin/env bash
# Idempotently install what the process-level tests start themselves, from
# Debian packages: nats-server and PostgreSQL's server binaries. Tests run them
# on free loopback ports in temp dirs and stop them by PID; nothing here
# starts a service.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
need=()
have nats-server || need+=(nats-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: missing ${need[*]} and not root; install them (apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Where an init system exists the package may start a system instance; the tests use their own.
  (service nats-server stop || /etc/init.d/nats-server stop) >/dev/null 2>&1 || true
  (service postgresql stop || /etc/init.d/postgresql stop) >/dev/null 2>&1 || true
fi

# PostgreSQL refuses to run as root: the tests run it as this unprivileged user.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
