#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the storage tests.
#
#   pg_env=$(bash .ci/postgres.sh)      # start (an assignment, so that `set -e` sees a failure;
#   eval "$pg_env"                      #   `eval "$(…)"` alone would hide it); exports
#                                       #   DREHSCHEIBE_TEST_PG_DSN and DREHSCHEIBE_PG_DATA
#   bash .ci/postgres.sh stop "$DREHSCHEIBE_PG_DATA"   # stop it and delete its files
#
# Installs PostgreSQL from Debian packages when no server binaries are found (root only),
# initialises a cluster in a new temporary directory owned by a non-root user (PostgreSQL
# refuses to run as root), starts it on 127.0.0.1 on a free port with password
# (SCRAM) authentication, creates the database `drehscheibe_test` and prints `export …`
# lines for the shell to evaluate. Everything else it says goes to stderr.
set -euo pipefail

say() { printf 'postgres.sh: %s\n' "$*" >&2; }

# The newest server installed by the Debian packages (/usr/lib/postgresql/<major>/bin).
server_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
        printf '%s\n' "$dir"
    fi
}

# Run a command as the cluster owner: directly when we are not root, else through runuser.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$OWNER" -- "$@"
    else
        "$@"
    fi
}

if [[ "${1:-start}" == "stop" ]]; then
    data="${2:?usage: postgres.sh stop DATA_DIRECTORY}"
    BIN=$(server_bin)
    OWNER=$(stat -c %U "$data")
    as_owner "$BIN/pg_ctl" -D "$data/cluster" -m fast -w stop >&2 || true
    rm -rf "$data"
    say "stopped and removed $data"
    exit 0
fi

BIN=$(server_bin)
if [[ -z "$BIN" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        say "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
        exit 1
    fi
    say "installing PostgreSQL from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # libpq5 is also what the plain (pure-Python) psycopg driver loads at import.
    apt-get install -y -qq --no-install-recommends postgresql libpq5 >&2
    BIN=$(server_bin)
    [[ -n "$BIN" ]] || { say "postgresql installed but no server binaries under /usr/lib/postgresql"; exit 1; }
fi
# The driver needs libpq even where only the server was installed by hand.
if ! ldconfig -p 2>/dev/null | grep 'libpq\.so\.5' >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y -qq --no-install-recommends libpq5 >&2 || { apt-get update -qq >&2; apt-get install -y -qq libpq5 >&2; }
    else
        say "warning: libpq.so.5 not found; the psycopg driver will not load (apt-get install libpq5)"
    fi
fi

# The cluster owner: the invoking user unless that is root; then the `postgres` account
# the Debian package creates, or a dedicated system account if that is missing.
if [[ $(id -u) -eq 0 ]]; then
    if id postgres >/dev/null 2>&1; then
        OWNER=postgres
    else
        id drehscheibe-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin drehscheibe-pg
        OWNER=drehscheibe-pg
    fi
else
    OWNER=$(id -un)
fi

# As root the directory must be reachable by the owner account: /tmp, whatever TMPDIR says.
if [[ $(id -u) -eq 0 ]]; then BASE=/tmp; else BASE=${TMPDIR:-/tmp}; fi
DATA=$(mktemp -d "$BASE/drehscheibe-pg.XXXXXX")
chmod 700 "$DATA"
[[ $(id -u) -eq 0 ]] && chown "$OWNER" "$DATA"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
DATABASE=drehscheibe_test
ROLE=drehscheibe

as_owner bash -c "umask 077; printf '%s\n' '$PASSWORD' > '$DATA/pwfile'"
as_owner "$BIN/initdb" -D "$DATA/cluster" -U "$ROLE" --pwfile="$DATA/pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$DATA/initdb.log" 2>&1 || { cat "$DATA/initdb.log" >&2; exit 1; }
rm -f "$DATA/pwfile"

# Loopback TCP only; the Unix socket lives in the private directory. fsync and
# synchronous_commit stay at their (durable) defaults so tests and figures are honest.
as_owner "$BIN/pg_ctl" -D "$DATA/cluster" -l "$DATA/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DATA -c max_connections=200" \
    start >&2 || { cat "$DATA/server.log" >&2; exit 1; }

as_owner env PGPASSWORD="$PASSWORD" "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$ROLE" "$DATABASE"

DSN="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DATABASE"
say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (data $DATA, owner $OWNER)"
printf "export DREHSCHEIBE_TEST_PG_DSN='%s'\n" "$DSN"
printf "export DREHSCHEIBE_PG_DATA='%s'\n" "$DATA"
