#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages when missing, starts a throw-away server on loopback (trust
# auth, its own data directory) and prints its SQLAlchemy URL and that directory, on one line. Exits
# non-zero, saying why, if it cannot. `postgres.sh stop DIR` stops that server and removes DIR.
set -euo pipefail
if [ "${1:-}" = stop ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  su postgres -s /bin/sh -c "'$bin/pg_ctl' -D '$2/data' -m fast -w stop" >/dev/null 2>&1 || true
  rm -rf "$2"
  exit 0
fi
port=${PGPORT_CBIR:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages…" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/dev/null 2>&1 \
    || { echo "apt-get could not install postgresql" >&2; exit 1; }
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=$(mktemp -d /tmp/cbir-pg.XXXXXX)
chown postgres "$dir"
su postgres -s /bin/sh -c "'$bin/initdb' -D '$dir/data' --auth=trust -U postgres >'$dir/initdb.log' 2>&1" \
  || { echo "initdb failed: $(tail -n 5 "$dir/initdb.log")" >&2; exit 1; }
su postgres -s /bin/sh -c "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w \
  -o \"-c listen_addresses=127.0.0.1 -p $port -k '$dir' -c fsync=off\" start >/dev/null" \
  || { echo "PostgreSQL did not start: $(tail -n 5 "$dir/server.log")" >&2; exit 1; }
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres $dir"
