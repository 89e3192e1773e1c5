#!/usr/bin/env bash
# The scale-out rows of `make bench`: one batch of small files to S3 moved
# by one process, then by three (a server and two `noodle-migrate worker`
# processes), each at the default concurrency of 5. Once through a
# loopback proxy that adds 20 ms to every S3 request (a remote bucket: one
# process is bound by latency, not by this machine's cores), once straight
# to the loopback server. Also the database transactions per file with
# three processes. Writes the rows between the scale-out markers of
# bench/results.md (bench/run.sh writes the markers).
#
#   bench/scale-out.sh [files, default 12000]
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
cargo build --release --quiet --bin noodle-migrate
FILES="${1:-12000}"
SIZE=4096
CONC=5
DELAY=0.020
WORK="$RUN_DIR/bench-scale-out"
TPL=bench_scale_out_tpl
DB=bench_scale_out
RID=$(date +%s)
log() { echo "==> $*" >&2; }
rm -rf "$WORK" && mkdir -p "$WORK"
own_s3s_fs "$WORK/s3"
own_postgres
PIDS=()
BUCKETS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for b in "${BUCKETS[@]}"; do drop_bucket "$b"; done
  [ -n "$S3FS_PID" ] && kill "$S3FS_PID" 2>/dev/null
  stop_postgres
  rm -rf "$WORK/s3" "$WORK/media"
}
trap cleanup EXIT

log "Scale-out: seeding $FILES files of $SIZE bytes"
seed_library "$TPL" "$WORK/media" "$FILES" "$SIZE"

proxy_port=$(free_port)
python3 bench/latency-proxy.py "$proxy_port" "${ENDPOINT#http://}" "$DELAY" &
PIDS+=($!)
REMOTE="http://127.0.0.1:$proxy_port"

# The environment of every process of a case.
nm_env() {
  echo PATH="$PATH" DB_URL="$BASE_URL/$DB" IMMICH_MEDIA_LOCATION="$WORK/media" \
    IMMICH_STORAGE_BACKEND=s3 S3_BUCKET="$2" S3_ENDPOINT="$1" \
    S3_ACCESS_KEY_ID="$AK" S3_SECRET_ACCESS_KEY="$SK"
}

# One case: endpoint, number of processes. Prints files/s and the
# database transactions per file.
run_case() {
  local endpoint=$1 procs=$2 bucket="so-$RID-$3"
  make_bucket "$bucket"; BUCKETS+=("$bucket")
  psqla -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB TEMPLATE $TPL"
  local env port server workers=()
  env=$(nm_env "$endpoint" "$bucket")
  for i in $(seq 2 "$procs"); do
    : >"$WORK/worker-$i.log"
    # shellcheck disable=SC2086
    env -i $env NOODLE_MIGRATE_LISTEN="127.0.0.1:$(free_port)" RUST_LOG=info "$BIN" worker 2>"$WORK/worker-$i.log" &
    workers+=($!); PIDS+=($!)
  done
  for i in $(seq 2 "$procs"); do
    for _ in $(seq 1 200); do grep -q "Waiting for a migration to join" "$WORK/worker-$i.log" && break; sleep 0.1; done
  done
  port=$(free_port)
  # shellcheck disable=SC2086
  env -i $env NOODLE_MIGRATE_LISTEN="127.0.0.1:$port" RUST_LOG=error "$BIN" serve &
  server=$!; PIDS+=($server)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  local x0 x1 start end status
  x0=$(psqla -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
  start=$(now)
  curl -sf -X POST "http://127.0.0.1:$port/storage-migration/start" \
    -d "{\"direction\":\"toS3\",\"concurrency\":$CONC}" >/dev/null
  while :; do
    sleep 0.2
    status=$(curl -sf "http://127.0.0.1:$port/storage-migration/status")
    echo "$status" | grep -q '"isActive":false' && break
  done
  end=$(now)
  x1=$(psqla -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
  python3 - "$status" "$FILES" "$procs" <<'PY' >&2 || { echo "the run did not move every file: $status" >&2; exit 1; }
import json, sys
s, files, procs = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
busy = [w for w in s["workers"] if w["completed"] > 0]
assert s["state"] == "completed" and s["completed"] == files, s
assert len(busy) == procs, f"{len(busy)} of {procs} processes moved files"
print("   per process:", ", ".join(str(w["completed"]) for w in busy))
PY
  kill "$server" "${workers[@]}" 2>/dev/null || true
  wait "$server" "${workers[@]}" 2>/dev/null || true
  echo "$(rate "$FILES" "$start" "$end") $(python3 -c "print(f'{($x1 - $x0) / $FILES:.4f}')")"
}

declare -A R
for where in remote loopback; do
  endpoint=$REMOTE; [ "$where" = loopback ] && endpoint=$ENDPOINT
  for procs in 1 3; do
    log "Scale-out: $procs process(es), $where"
    read -r rate xacts < <(run_case "$endpoint" "$procs" "$where-$procs")
    R[$where-$procs]=$rate; R[$where-$procs-x]=$xacts
    log "   $rate files/s, $xacts transactions per file"
  done
done

rows=$(cat <<MD
## Scale-out: one batch, one process against three ($(date -u +%Y-%m-%d), bench/scale-out.sh)

$FILES files of 4 KB to S3 (s3s-fs 0.14.1 on loopback), concurrency $CONC per process; three processes are \`serve\` plus two \`noodle-migrate worker\`, sharing the batch through PostgreSQL. "Remote" goes through bench/latency-proxy.py, which adds 20 ms to every S3 request. Files/s from the start to the batch's close, the workers' start-up excluded.

| bucket | 1 process | 3 processes | 3 ÷ 1 | database transactions per file, 1 → 3 processes |
|---|---|---|---|---|
| remote (+20 ms per request) | ${R[remote-1]} files/s | ${R[remote-3]} files/s | $(ratio "${R[remote-3]}" "${R[remote-1]}")× | ${R[remote-1-x]} → ${R[remote-3-x]} |
| loopback | ${R[loopback-1]} files/s | ${R[loopback-3]} files/s | $(ratio "${R[loopback-3]}" "${R[loopback-1]}")× | ${R[loopback-1-x]} → ${R[loopback-3-x]} |

Transactions per file count everything the batch's database ran during the run (pg_stat_database): the ledger's groups, and per-second work (each process's heartbeat, leases, a group that lingers for company), which weighs more per file the slower the files come.
MD
)
python3 - "$rows" <<'PY'
import re, sys
path = "bench/results.md"
text = open(path).read()
start, end = "<!-- scale-out -->", "<!-- /scale-out -->"
block = f"{start}\n{sys.argv[1]}\n{end}"
if start in text:
    text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
echo "$rows"
