#!/usr/bin/env bash
# Bring up a throwaway PostgreSQL 15 + pgvector server for the test suite.
#
#   url=$(bash scripts/setup-postgres.sh | tail -n1)
#
# Debian 12 (bookworm), normally run as root (as CI does):
#   * installs postgresql-15 from apt if it is missing;
#   * builds pgvector 0.8.x from Debian's own source package of trixie
#     (a deb-src-only entry, so nothing binary ever comes from trixie) when
#     /usr/share/postgresql/15/extension/vector.control is missing;
#   * initdb's a private cluster (as the `postgres` user) under $MM_PG_DIR
#     (default /tmp/memory-migrate-pg), listening on 127.0.0.1 only, on the
#     first free port from 54329 up, with scram-sha-256 auth over TCP and a
#     superuser role mm / mm_test_pw.
# Idempotent: a running server is reused, a stopped one restarted.
# The connection URL is the last (and only) line on stdout; all else on stderr.

set -euo pipefail

# Never let the caller's libpq environment (PGHOST, PGPASSWORD, ...) redirect
# our own psql calls. Done first: our own variables below also start with PG.
for v in $(compgen -v PG || true); do unset "$v"; done
export PGCONNECT_TIMEOUT=10

PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"
PG_EXT_DIR="/usr/share/postgresql/${PG_MAJOR}/extension"
DB_USER=mm
DB_PASSWORD=mm_test_pw
DB_NAME=postgres
PORT_START="${MM_PG_PORT_START:-54329}"
PORT_END=$((PORT_START + 200))

if [[ $EUID -eq 0 ]]; then
  BASE="${MM_PG_DIR:-/tmp/memory-migrate-pg}"
else
  BASE="${MM_PG_DIR:-/tmp/memory-migrate-pg-$(id -u)}"
fi
DATA="$BASE/data"
SOCK="$BASE/socket"
LOG="$BASE/postgres.log"
STATE="$BASE/port"
READY="$DATA/.memory-migrate-ready"

log() { printf '[setup-postgres] %s\n' "$*" >&2; }
die() {
  printf '[setup-postgres] ERROR: %s\n' "$*" >&2
  if [[ -s "$LOG" ]]; then
    printf '[setup-postgres] last lines of %s:\n' "$LOG" >&2
    tail -n 20 "$LOG" >&2 || true
  fi
  exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

# Run a command as the OS user that owns the cluster.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# ---------------------------------------------------------------- packages

APT_UPDATED=0
apt_update() {
  [[ $APT_UPDATED -eq 1 ]] && return 0
  log "apt-get update"
  # A broken third-party source must not stop us; a real problem shows up
  # as a failed install/source step below, with its own message.
  if ! apt-get update -q >&2; then
    log "warning: apt-get update reported errors; continuing"
  fi
  APT_UPDATED=1
}

apt_install() {
  log "apt-get install $*"
  apt-get install -y -q --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed"
}

TRIXIE_SRC=/etc/apt/sources.list.d/memory-migrate-trixie-src.sources
BUILD_DIR=""
cleanup() {
  [[ -n "$BUILD_DIR" && -d "$BUILD_DIR" ]] && rm -rf "$BUILD_DIR"
  [[ -f "$TRIXIE_SRC" ]] && rm -f "$TRIXIE_SRC"
  return 0
}
trap cleanup EXIT

ensure_packages() {
  local need_pg=0 need_vector=0
  [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" && -x "$PG_BIN/postgres" && -x "$PG_BIN/psql" ]] || need_pg=1
  [[ -f "$PG_EXT_DIR/vector.control" ]] || need_vector=1
  [[ $need_pg -eq 0 && $need_vector -eq 0 ]] && return 0

  if [[ $EUID -ne 0 ]]; then
    [[ $need_pg -eq 1 ]] && die "PostgreSQL $PG_MAJOR is not installed ($PG_BIN) and installing it needs root"
    die "pgvector is not installed ($PG_EXT_DIR/vector.control) and building it needs root"
  fi
  command -v apt-get >/dev/null || die "apt-get not found: this script expects Debian 12 (bookworm)"
  export DEBIAN_FRONTEND=noninteractive

  if [[ $need_vector -eq 1 ]]; then
    # Source entries only: apt never installs or upgrades binaries from here.
    log "adding deb-src entry for trixie (pgvector source package)"
    cat >"$TRIXIE_SRC" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt_update

  if [[ $need_pg -eq 1 ]]; then
    apt_install "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR"
    [[ -x "$PG_BIN/initdb" ]] || die "postgresql-$PG_MAJOR installed but $PG_BIN/initdb is missing"
  fi

  if [[ $need_vector -eq 1 ]]; then
    local t0=$SECONDS
    apt_install "postgresql-server-dev-$PG_MAJOR" dpkg-dev make gcc libc6-dev
    BUILD_DIR=$(mktemp -d /tmp/memory-migrate-pgvector.XXXXXX)
    chmod 755 "$BUILD_DIR" # lets apt's _apt user write the download here
    log "apt-get source pgvector (trixie) in $BUILD_DIR"
    (cd "$BUILD_DIR" && apt-get source -q pgvector >&2) \
      || die "apt-get source pgvector failed (is the trixie deb-src entry reachable?)"
    rm -f "$TRIXIE_SRC" # done with it: keep later apt-get updates lean
    local src
    src=$(find "$BUILD_DIR" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
    [[ -n "$src" && -f "$src/Makefile" ]] || die "pgvector source tree not found in $BUILD_DIR"
    log "building $(basename "$src")"
    # OPTFLAGS='' as Debian does: no -march=native, so the binary is portable.
    make -C "$src" -j"$(nproc)" PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS= >&2 \
      || die "pgvector build failed"
    make -C "$src" install PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS= >&2 \
      || die "pgvector install failed"
    [[ -f "$PG_EXT_DIR/vector.control" ]] || die "pgvector installed but $PG_EXT_DIR/vector.control is missing"
    log "pgvector $(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$PG_EXT_DIR/vector.control") installed in $((SECONDS - t0)) s"
  fi
}

# ------------------------------------------------------------------ server

port_is_free() {
  # Bind test: succeeds only if nothing listens on 127.0.0.1:$1.
  node -e '
    const s = require("net").createServer();
    s.once("error", () => process.exit(1));
    s.listen(Number(process.argv[1]), "127.0.0.1", () => s.close(() => process.exit(0)));
  ' "$1" 2>/dev/null && return 0
  [[ $? -eq 1 ]] && return 1
  # node unavailable: fall back to a connect probe.
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
  local p
  if [[ -s "$STATE" ]]; then
    p=$(<"$STATE")
    if [[ "$p" =~ ^[0-9]+$ ]] && port_is_free "$p"; then echo "$p"; return 0; fi
  fi
  for ((p = PORT_START; p <= PORT_END; p++)); do
    if port_is_free "$p"; then echo "$p"; return 0; fi
  done
  die "no free port in $PORT_START-$PORT_END"
}

# True if the postmaster named in postmaster.pid is alive and serves $DATA.
# (A dead one can linger as a zombie, and after a reboot its PID may belong to
# another program: pg_ctl status would call both "running".)
server_running() {
  local pid state
  [[ -f "$DATA/postmaster.pid" ]] || return 1
  pid=$(head -n1 "$DATA/postmaster.pid")
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/stat" ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [[ "$state" != Z && "$state" != X ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DATA"
}

running_port() { sed -n '4p' "$DATA/postmaster.pid"; }

psql_super() { # psql over the private socket as the bootstrap superuser
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$1" -U postgres -d postgres "${@:2}"
}

init_cluster() {
  log "initdb in $DATA"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [[ $EUID -eq 0 ]] && chown postgres: "$DATA"
  chmod 700 "$DATA"
  local locale_args=(--no-locale --encoding=UTF8)
  if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
    locale_args=(--locale=C.UTF-8 --encoding=UTF8)
  fi
  as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust "${locale_args[@]}" >"$BASE/initdb.log" 2>&1 \
    || { cat "$BASE/initdb.log" >&2; die "initdb failed"; }

  # Local socket (in a 0700 directory) trusts its owner; TCP needs a password.
  as_pg tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   scram-sha-256
EOF
  as_pg tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# ---- memory-migrate test server ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
password_encryption = 'scram-sha-256'
max_connections = 200
shared_buffers = 256MB
maintenance_work_mem = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 2GB
log_min_messages = warning
log_connections = off
include_if_exists = 'memory-migrate-port.conf'
EOF
}

start_server() {
  local port=$1
  echo "port = $port" | as_pg tee "$DATA/memory-migrate-port.conf" >/dev/null
  echo "$port" >"$STATE"
  log "starting PostgreSQL $PG_MAJOR on 127.0.0.1:$port"
  # 9>&-: the server must not inherit our lock fd, or it would hold the lock
  # for as long as it runs and every later call would wait on it.
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >&2 9>&- \
    || die "pg_ctl start failed"
}

# ------------------------------------------------------------------- main

T0=$SECONDS
mkdir -p "$BASE"
chmod 755 "$BASE" # the postgres user must be able to traverse it
cd "$BASE"        # initdb/pg_ctl run as postgres and need a readable cwd
exec 9>"$BASE/.lock"
flock -w 900 9 || die "timed out waiting for another setup-postgres.sh (lock $BASE/.lock)"

ensure_packages

if [[ $EUID -eq 0 ]]; then
  getent passwd postgres >/dev/null || die "OS user 'postgres' does not exist (is postgresql-$PG_MAJOR installed?)"
fi

if [[ $EUID -eq 0 ]]; then
  [[ -e "$LOG" ]] || { : >"$LOG"; }
  chown postgres: "$LOG"
fi
if [[ ! -d "$SOCK" ]]; then
  mkdir -p "$SOCK"
fi
[[ $EUID -eq 0 ]] && chown postgres: "$SOCK"
chmod 700 "$SOCK"

if server_running; then
  PORT=$(running_port)
  [[ "$PORT" =~ ^[0-9]+$ ]] || die "cannot read the port from $DATA/postmaster.pid"
  [[ -f "$READY" ]] || log "server is running but was never finished: finishing setup"
  log "server already running on 127.0.0.1:$PORT"
else
  if [[ ! -f "$READY" || ! -f "$DATA/PG_VERSION" || "$(<"$DATA/PG_VERSION")" != "$PG_MAJOR" ]]; then
    init_cluster
  fi
  # Lock files left by a server that died (kill -9, reboot) name its PID and
  # would stop the new one. The socket dir is private to this cluster.
  if [[ -f "$DATA/postmaster.pid" ]] || compgen -G "$SOCK/.s.PGSQL.*" >/dev/null; then
    log "removing stale lock files (their server is gone)"
    rm -f "$DATA/postmaster.pid" "$SOCK"/.s.PGSQL.*
  fi
  PORT=$(pick_port)
  start_server "$PORT"
fi
echo "$PORT" >"$STATE"

if [[ ! -f "$READY" ]]; then
  log "creating role $DB_USER"
  psql_super "$PORT" <<EOF >&2
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
  ELSE
    ALTER ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD';
  END IF;
END
\$\$;
EOF
  as_pg touch "$READY"
fi

URL="postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"

# Verify the real path the tests use: TCP + password, and that pgvector loads.
# Rolled back, so the postgres database is left exactly as the tests expect.
if ! out=$("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$URL" 2>&1 <<'EOF'
BEGIN;
CREATE EXTENSION IF NOT EXISTS vector;
SELECT extversion FROM pg_extension WHERE extname = 'vector';
SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector;
ROLLBACK;
EOF
); then
  printf '%s\n' "$out" >&2
  die "verification over TCP failed"
fi
read -r -d '' VEC_VERSION _ <<<"$out" || true
log "ready in $((SECONDS - T0)) s: PostgreSQL $PG_MAJOR on 127.0.0.1:$PORT, pgvector $VEC_VERSION, user $DB_USER, data $DATA"

echo "$URL"
