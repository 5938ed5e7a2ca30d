#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 for the multi-worker tests (tests/test_postgres.py).
#
# Idempotent and quick when the server already answers: installs the package only when no server
# binaries are present, starts its own cluster (data in $SWEEP_PG_DATA, owned by the postgres
# user) unless something already listens on the port, creates the role and the database, and
# prints the connection URL as the LAST line of stdout (everything else goes to stderr), so
#   export SWEEP_TEST_POSTGRES_URL=$(.ci/postgres.sh | tail -n 1)
# Run as root (CI) or as the postgres user.
set -euo pipefail

PORT=${SWEEP_PG_PORT:-5432}
DB=${SWEEP_PG_DB:-sweep_test}
ROLE=${SWEEP_PG_USER:-sweep}
PASSWORD=${SWEEP_PG_PASSWORD:-sweep}
DATA=${SWEEP_PG_DATA:-/var/lib/postgresql/sweep-ci-$PORT}
URL="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
cd /  # the postgres user may not be able to enter the caller's folder

log() { echo "postgres.sh: $*" >&2; }
can_login() { PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" -Atqc 'select 1' >/dev/null 2>&1; }

# Fast path: the server runs and the database is there.
if [ "${1:-}" != stop ] && command -v psql >/dev/null 2>&1 && can_login; then
  log "already running on 127.0.0.1:$PORT"
  echo "$URL"
  exit 0
fi

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/postgres" ]; then
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN=$(bindir)
[ -x "$BIN/postgres" ] || { log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"; exit 1; }

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

if [ "${1:-}" = stop ]; then  # `.ci/postgres.sh stop`: stop the cluster this script started (data in $DATA)
  if [ -s "$DATA/postmaster.pid" ]; then
    as_postgres "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2 && log "stopped the server in $DATA"
  fi
  exit 0
fi

if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  # A server we did not start (e.g. the distribution's cluster): use it, through its socket.
  SOCKET=$(ls -d /var/run/postgresql 2>/dev/null || echo /tmp)
  log "a server already listens on 127.0.0.1:$PORT; adding the role and database to it"
else
  SOCKET=$DATA
  if [ ! -s "$DATA/PG_VERSION" ]; then
    log "initialising a cluster in $DATA"
    mkdir -p "$DATA"
    chown postgres:postgres "$DATA"
    chmod 700 "$DATA"
    as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  fi
  log "starting the server on 127.0.0.1:$PORT"
  as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=200" start >&2 \
    || { log "server did not start; its log:"; tail -n 30 "$DATA/server.log" >&2; exit 1; }
fi

psql_admin() { as_postgres "$BIN/psql" -h "$SOCKET" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
psql_admin -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN CREATE ROLE \"$ROLE\" LOGIN; END IF;
END \$\$;" -c "ALTER ROLE \"$ROLE\" LOGIN PASSWORD '$PASSWORD'" >&2
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  psql_admin -c "CREATE DATABASE \"$DB\" OWNER \"$ROLE\"" >&2
fi

can_login || { log "cannot log in as $ROLE at 127.0.0.1:$PORT/$DB"; exit 1; }
log "ready"
echo "$URL"
