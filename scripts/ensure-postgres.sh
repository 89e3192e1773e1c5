#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for user postgres
# (password "postgres", or trust). Installs Debian's postgresql when absent.
set -euo pipefail

URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
can_connect() { psql "$URL" -qtAc 'SELECT 1' >/dev/null 2>&1; }

# Dumps need a pg_dump at least as new as the server.
ensure_pg_dump() {
  local major have
  major="$(psql "$URL" -qtAc "SELECT current_setting('server_version_num')::int / 10000")"
  [ -x "/usr/lib/postgresql/$major/bin/pg_dump" ] && return 0
  have="$(pg_dump --version 2>/dev/null | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/' || true)"
  [ -n "$have" ] && [ "$have" -ge "$major" ] && return 0
  echo "==> Installing pg_dump for PostgreSQL $major (Debian postgresql-client)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-client-$major" >/dev/null 2>&1 \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null
}

if command -v psql >/dev/null && can_connect; then
  ensure_pg_dump
  exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "==> Installing PostgreSQL (Debian package postgresql)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
if [ ! -d "/etc/postgresql/$version/main" ]; then
  echo "==> Creating cluster $version/main"
  as_root pg_createcluster "$version" main >/dev/null
fi
echo "==> Starting PostgreSQL $version"
as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true

for _ in $(seq 1 30); do
  if pg_isready -q -h 127.0.0.1 -p 5432; then break; fi
  sleep 1
done
if ! can_connect; then
  # A fresh Debian cluster wants a password over TCP: give postgres the one
  # the tests use (over the local socket, where peer auth applies).
  as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
fi
can_connect || { echo "PostgreSQL does not accept $URL" >&2; exit 1; }
ensure_pg_dump
