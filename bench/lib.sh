# Shared by bench/run.sh and bench/scale.sh: settings, the reference
# clients' environment, and helpers. Sourced, not run.

RUN_DIR="${RUN_DIR:-$(pwd)/.run}"
ADMIN_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
BASE_URL="${ADMIN_URL%/*}"
ENDPOINT="${BENCH_S3_ENDPOINT:-${TEST_S3_ENDPOINT:-http://127.0.0.1:8014}}"
AK="${BENCH_S3_ACCESS_KEY:-${TEST_S3_ACCESS_KEY:-nmtest}}"
SK="${BENCH_S3_SECRET_KEY:-${TEST_S3_SECRET_KEY:-nmtestsecret}}"
BIN="${CARGO_TARGET_DIR:-target}/release/noodle-migrate"
OWNER=11111111-1111-4111-8111-111111111111
export AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" AWS_DEFAULT_REGION=us-east-1
# Debian's rclone fails on AWS_CA_BUNDLE even over http.
unset AWS_CA_BUNDLE
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
  RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$AK" RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SK" \
  RCLONE_CONFIG_BENCH_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true

psqla() { psql "$ADMIN_URL" -qtAX "$@"; }
now() { date +%s.%N; }
# Waits, before a timed run, until the previous one has left nothing
# behind: dirty pages written out (on ext4 a client's fsync commits the
# journal and waits for all data written before it, so a client that
# fsyncs each file would pay for the writeback of one that never does),
# and the machine idle (Garage goes on updating its tables for a while
# after a run, and that work would fall into the next client's time):
# at most 5 % of the CPUs busy for two seconds running, or 90 s at most.
settle() {
  sync
  python3 - <<'PY'
import time
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)
quiet, deadline = 0, time.time() + 90
b0, t0 = busy()
while quiet < 2 and time.time() < deadline:
    time.sleep(1)
    b1, t1 = busy()
    quiet = quiet + 1 if (b1 - b0) <= 0.05 * max(t1 - t0, 1) else 0
    b0, t0 = b1, t1
PY
}
# Seconds a command takes (its output discarded), from a settled machine.
timed() { local start end; settle; start=$(now); "$@" >/dev/null; end=$(now); python3 -c "print(f'{$end - $start:.2f}')"; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.1f}')"; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

# Buckets are named per run so that runs never meet each other, and are
# removed when the run is done with them: on the loopback s3s-fs, whose
# data sits in $RUN_DIR/s3, by removing their folder (deleting a few
# hundred thousand objects one by one would take longer than the bench).
make_bucket() { aws --endpoint-url "$ENDPOINT" s3 mb "s3://$1" >/dev/null; }
# Where the loopback s3s-fs in use keeps its data.
S3_DATA="$RUN_DIR/s3"
drop_bucket() {
  if [ -d "$S3_DATA/$1" ]; then
    rm -rf "${S3_DATA:?}/$1"
    # and the metadata s3s-fs keeps beside it, named after the bucket
    local encoded
    encoded=$(printf %s "$1" | base64 -w0 | tr '+/' '-_' | tr -d '=')
    find "$S3_DATA" -maxdepth 1 -name ".bucket-$encoded.*" -delete
  else
    aws --endpoint-url "$ENDPOINT" s3 rb --force "s3://$1" >/dev/null 2>&1 || true
  fi
}

# A loopback s3s-fs of the bench's own, on a free port with its data in
# $1, unless another endpoint was asked for: s3s-fs keeps two metadata
# files per object ever written in one flat folder and never removes them,
# so hundreds of thousands of objects would fill the shared server's
# folder for good. Sets ENDPOINT (and rclone's); S3FS_PID to stop it.
S3FS_PID=
own_s3s_fs() {
  [ -n "${BENCH_S3_ENDPOINT:-}" ] && return 0
  local port
  port=$(free_port)
  mkdir -p "$1"
  s3s-fs --host 127.0.0.1 --port "$port" --access-key "$AK" --secret-key "$SK" "$1" >"$1.log" 2>&1 &
  S3FS_PID=$!
  S3_DATA="$1"
  ENDPOINT="http://127.0.0.1:$port"
  export RCLONE_CONFIG_BENCH_ENDPOINT="$ENDPOINT"
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.2; done
  echo "s3s-fs did not start; see $1.log" >&2
  return 1
}

# A PostgreSQL of the bench's own, unless another was asked for
# (BENCH_DATABASE_URL): the server's default settings, as a gallery runs
# it. The shared server on a CI machine may be tuned otherwise (this
# project's has autovacuum off, and a table a run rewrites then bloats
# without end). Sets ADMIN_URL and BASE_URL; stop_postgres stops it.
PG_DIR=
PG_BIN=
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
own_postgres() {
  if [ -n "${BENCH_DATABASE_URL:-}" ]; then
    ADMIN_URL="$BENCH_DATABASE_URL"; BASE_URL="${ADMIN_URL%/*}"
    return 0
  fi
  local port
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  port=$(free_port)
  PG_DIR=$(mktemp -d /var/tmp/nm-bench-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust >"$PG_DIR.initdb.log" 2>&1
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null
  rm -f "$PG_DIR.initdb.log"
  ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
  BASE_URL="${ADMIN_URL%/*}"
}
stop_postgres() {
  [ -n "$PG_DIR" ] || return 0
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}

# A gallery database $1 (created anew) of $3 originals of $4 bytes each,
# written under the media folder $2 (bench/seed.py), with their recorded
# sizes and checksums.
seed_library() {
  local db=$1 media=$2 files=$3 size=$4 csv="$2.csv"
  psqla -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  psql "$BASE_URL/$db" -qtAX -f tests/it/fixtures/gallery_schema.sql -f tests/it/fixtures/gallery_log_table.sql >/dev/null
  psql "$BASE_URL/$db" -qX -c "INSERT INTO \"user\" (id, email) VALUES ('$OWNER', 'bench@example.test')"
  python3 bench/seed.py "$media" "$OWNER" "$files" "$size" >"$csv"
  psql "$BASE_URL/$db" -qX -c "CREATE TEMP TABLE s (id uuid, owner uuid, path text, sha text, size bigint)" \
    -c "\\copy s FROM '$csv' WITH (FORMAT csv)" \
    -c "INSERT INTO asset (id, \"deviceAssetId\", \"ownerId\", \"deviceId\", type, \"originalPath\", \"fileCreatedAt\", \"fileModifiedAt\", \"localDateTime\", checksum, \"originalFileName\") SELECT id, id::text, owner, 'bench', 'IMAGE', path, now(), now(), now(), decode(sha, 'hex'), 'x.jpg' FROM s" \
    -c "INSERT INTO asset_exif (\"assetId\", \"fileSizeInByte\") SELECT id, size FROM s" \
    -c "VACUUM ANALYZE"
  rm -f "$csv"
}

# One noodle-migrate run in this process (`run`), against $ENDPOINT:
#   nm_run DB MEDIA BACKEND DIRECTION CONCURRENCY BUCKET [ENDPOINT]
# Prints "seconds peakRSS_kB"; stops the bench when a file did not move.
# The run's JSON summary is left in $WORK/last-run.json.
nm_run() {
  local db=$1 media=$2 backend=$3 direction=$4 conc=$5 bkt=$6 endpoint=${7:-$ENDPOINT}
  local start end rss
  settle
  start=$(now)
  rss=$(env -i PATH="$PATH" DB_URL="$BASE_URL/$db" IMMICH_MEDIA_LOCATION="$media" \
    IMMICH_STORAGE_BACKEND="$backend" S3_BUCKET="$bkt" S3_ENDPOINT="$endpoint" \
    S3_ACCESS_KEY_ID="$AK" S3_SECRET_ACCESS_KEY="$SK" RUST_LOG=error \
    /usr/bin/time -f "%M" "$BIN" run --direction "$direction" --concurrency "$conc" --json 2>&1 >"$WORK/last-run.json" | tail -1)
  end=$(now)
  if ! grep -q '"failed": 0' "$WORK/last-run.json" || ! grep -q '"skipped": 0' "$WORK/last-run.json"; then
    echo "noodle-migrate did not move every file:" >&2; cat "$WORK/last-run.json" >&2; exit 1
  fi
  echo "$(secs "$start" "$end") $rss"
}

# rclone against another endpoint than $ENDPOINT (a proxy in front of it).
rclone_via() { local endpoint=$1; shift; RCLONE_CONFIG_BENCH_ENDPOINT="$endpoint" rclone "$@"; }

# Garage 2.5.0, a single node on loopback with its data in $1, installed
# with cargo into $NM_TOOLS on first use (about 10 to 30 minutes). Sets
# ENDPOINT, AK and SK (a key allowed to create buckets) and rclone's;
# GARAGE_PID to stop it. The caller removes $1.
NM_TOOLS="${NM_TOOLS:-/var/tmp/nm-tools}"
GARAGE="$NM_TOOLS/bin/garage"
GARAGE_PID=
hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
install_garage() {
  if [ -x "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -q '2\.5\.0'; then
    return 0
  fi
  echo "==> Installing Garage 2.5.0 into $NM_TOOLS (cargo install; once, takes a while)" >&2
  cargo install garage@2.5.0 --locked --quiet --root "$NM_TOOLS"
}
own_garage() {
  local dir=$1 rpc s3 admin conf id i
  install_garage
  mkdir -p "$dir/meta" "$dir/data"
  rpc=$(free_port); s3=$(free_port); admin=$(free_port)
  conf="$dir/garage.toml"
  cat >"$conf" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "${AWS_DEFAULT_REGION:-us-east-1}"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
  RUST_LOG=warn "$GARAGE" -c "$conf" server >"$dir.log" 2>&1 &
  GARAGE_PID=$!
  for i in $(seq 1 100); do
    id=$("$GARAGE" -c "$conf" node id -q 2>/dev/null) && break
    sleep 0.2
  done
  [ -n "${id:-}" ] || { echo "Garage did not start; see $dir.log" >&2; return 1; }
  # The node's key is on disk before its RPC listens.
  for i in $(seq 1 100); do
    "$GARAGE" -c "$conf" status >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$GARAGE" -c "$conf" layout assign -z dc1 -c 100G "${id%@*}" >/dev/null
  "$GARAGE" -c "$conf" layout apply --version 1 >/dev/null
  AK="GK$(hex 12)"; SK=$(hex 32)
  "$GARAGE" -c "$conf" key import --yes -n nm-bench "$AK" "$SK" >/dev/null
  "$GARAGE" -c "$conf" key allow --create-bucket "$AK" >/dev/null
  ENDPOINT="http://127.0.0.1:$s3"
  export AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK"
  export RCLONE_CONFIG_BENCH_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$AK" \
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SK"
  for i in $(seq 1 100); do
    aws --endpoint-url "$ENDPOINT" s3 ls >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "Garage does not answer S3 calls; see $dir.log" >&2
  return 1
}
stop_garage() { [ -n "$GARAGE_PID" ] && kill "$GARAGE_PID" 2>/dev/null; GARAGE_PID=; }
