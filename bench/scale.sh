#!/usr/bin/env bash
# The scale row of `make bench`: a whole library of small files to S3 and
# back, through `noodle-migrate serve`, with the rate sampled every second
# so that a run that slows down as it goes shows it; then the same files
# through rclone. Prints `key value` lines for bench/run.sh.
#
#   bench/scale.sh <files> <concurrency>
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
FILES="${1:-500000}"
CONC="${2:-20}"
SIZE="${BENCH_SCALE_FILE_SIZE:-1024}"
WORK="$RUN_DIR/bench-scale"
DB=bench_scale_run
RID=$(date +%s)
log() { echo "==> $*" >&2; }
rm -rf "$WORK" && mkdir -p "$WORK"
own_s3s_fs "$WORK/s3"
own_postgres
cleanup() {
  drop_bucket "nm-scale-$RID"
  drop_bucket "rc-scale-$RID"
  [ -n "$S3FS_PID" ] && kill "$S3FS_PID" 2>/dev/null
  stop_postgres
  rm -rf "$WORK/s3" "$WORK/media" "$WORK/rclone-back"
}
trap cleanup EXIT
log "Scale: seeding $FILES files of $SIZE bytes"
seed_library "$DB" "$WORK/media" "$FILES" "$SIZE"
sync

# Starts `serve` on the bench database with the given backend; sets
# $server (its pid) and $port.
serve() {
  local backend=$1 bucket=$2
  port=$(free_port)
  env -i PATH="$PATH" DB_URL="$BASE_URL/$DB" IMMICH_MEDIA_LOCATION="$WORK/media" \
    IMMICH_STORAGE_BACKEND="$backend" S3_BUCKET="$bucket" S3_ENDPOINT="$ENDPOINT" \
    S3_ACCESS_KEY_ID="$AK" S3_SECRET_ACCESS_KEY="$SK" NOODLE_MIGRATE_LISTEN="127.0.0.1:$port" \
    RUST_LOG=error "$BIN" serve &
  server=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
}
# Stops it; prints its peak RSS in kB.
stop() {
  awk '/VmHWM/ {print $2}' "/proc/$server/status"
  kill "$server"; wait "$server" 2>/dev/null || true
}

# Runs one migration through `serve` and samples its status every second.
# Prints: seconds peak_rss_kB transactions_per_file batch_id; leaves the
# samples in $WORK/samples (see bench/tenths.py).
migrate() {
  local backend=$1 direction=$2 bucket=$3
  local x0 x1 start end status batch
  serve "$backend" "$bucket"
  x0=$(psqla -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
  start=$(now)
  batch=$(curl -sf -X POST "http://127.0.0.1:$port/storage-migration/start" \
    -d "{\"direction\":\"$direction\",\"deleteSource\":true,\"concurrency\":$CONC}" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['batchId'])")
  : >"$WORK/samples"
  while :; do
    sleep 1
    status=$(curl -sf "http://127.0.0.1:$port/storage-migration/status")
    # Also the CPU seconds spent so far by the engine, the S3 server and
    # PostgreSQL: where the time goes, tenth by tenth.
    cpu=$(ps -eo comm=,times= | awk '$1 ~ /^noodle-migrate/ {n+=$2} $1 ~ /^s3s-fs/ {s+=$2} $1 ~ /^postgres/ {p+=$2} END {print n+0, s+0, p+0}')
    python3 -c "import json,sys; s=json.loads(sys.argv[1]); print($(now) - $start, s['completed'] + s['failed'] + s['skipped'], s['failed'] + s['skipped'], sys.argv[2])" "$status" "$cpu" >>"$WORK/samples"
    echo "$status" | grep -q '"isActive":false' && break
  done
  end=$(now)
  x1=$(psqla -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
  local rss
  rss=$(stop)
  if [ "$(tail -1 "$WORK/samples" | cut -d' ' -f3)" != 0 ]; then
    echo "noodle-migrate did not move every file: $status" >&2; exit 1
  fi
  echo "$(secs "$start" "$end") $rss $(python3 -c "print(f'{($x1 - $x0) / $FILES:.4f}')") $batch"
}

# The same copy through rclone, its progress sampled every second (its
# JSON stats), so that the server's own slowing shows beside ours. Prints
# the seconds it took; leaves its files/s per tenth in $3.
rclone_sampled() {
  local start end
  start=$(now)
  rclone copy --transfers "$CONC" --checkers "$CONC" --stats 1s --use-json-log \
    --stats-log-level NOTICE "$1" "$2" 2>"$3.log"
  end=$(now)
  python3 -c "
import json, sys
for line in open(sys.argv[1]):
    try:
        s = json.loads(line)['stats']
    except (ValueError, KeyError):
        continue
    print(s['elapsedTime'], s['transfers'], s['errors'])
" "$3.log" >"$3.samples"
  python3 bench/tenths.py "$3.samples" "$FILES" | head -1 >"$3"
  secs "$start" "$end"
}

make_bucket "nm-scale-$RID"
log "Scale: noodle-migrate to S3 (concurrency $CONC, deleteSource)"
read -r -a up < <(migrate s3 toS3 "nm-scale-$RID")
cp "$WORK/samples" "$WORK/samples-up"
python3 bench/tenths.py "$WORK/samples-up" "$FILES" >"$WORK/tenths-up"
log "Scale: to S3 in ${up[0]} s; per tenth:"; cat "$WORK/tenths-up" >&2
# A quicker look, for tuning: the upload alone (it deletes the sources, so
# nothing is left for rclone).
if [ -n "${BENCH_SCALE_UP_ONLY:-}" ]; then exit 0; fi
log "Scale: noodle-migrate back to disk"
read -r -a down < <(migrate disk toDisk "nm-scale-$RID")
cp "$WORK/samples" "$WORK/samples-down"
python3 bench/tenths.py "$WORK/samples-down" "$FILES" >"$WORK/tenths-down"
log "Scale: to disk in ${down[0]} s; per tenth:"; cat "$WORK/tenths-down" >&2

log "Scale: the ledger's plan, the orphan report and a rollback at this size"
"${CARGO_TARGET_DIR:-target}/release/examples/explain_ledger" "$BASE_URL/$DB" "$WORK/media" >"$WORK/explain.txt"
serve disk "nm-scale-$RID"
orphans_s=$(timed curl -sf "http://127.0.0.1:$port/storage-migration/orphans?limit=10")
rollback_s=$(timed curl -sf -X POST "http://127.0.0.1:$port/storage-migration/rollback/${down[3]}")
rolled=$(psql "$BASE_URL/$DB" -qtAX -c "SELECT count(*) FROM noodle_migrate_batch WHERE id = '${down[3]}' AND state = 'rolled_back'")
[ "$rolled" = 1 ] || { echo "the rollback did not complete" >&2; exit 1; }
admin_rss=$(stop)
log "Scale: rclone, the same files both ways"
make_bucket "rc-scale-$RID"
rc_up=$(rclone_sampled "$WORK/media" "bench:rc-scale-$RID" "$WORK/rclone-up")
rc_down=$(rclone_sampled "bench:rc-scale-$RID" "$WORK/rclone-back" "$WORK/rclone-down")

echo "files $FILES"
echo "concurrency $CONC"
echo "postgres $(psqla -c 'SHOW server_version') (autovacuum $(psqla -c 'SHOW autovacuum'), shared_buffers $(psqla -c 'SHOW shared_buffers'))"
echo "up_seconds ${up[0]}"
echo "up_rss_kb ${up[1]}"
echo "up_xacts ${up[2]}"
sed 's/^/up_/' "$WORK/tenths-up"
echo "down_seconds ${down[0]}"
echo "down_rss_kb ${down[1]}"
echo "down_xacts ${down[2]}"
sed 's/^/down_/' "$WORK/tenths-down"
echo "orphans_seconds $orphans_s"
echo "rollback_seconds $rollback_s"
echo "admin_rss_kb $admin_rss"
echo "rclone_up_seconds $rc_up"
sed 's/^/rclone_up_/' "$WORK/rclone-up"
echo "rclone_down_seconds $rc_down"
sed 's/^/rclone_down_/' "$WORK/rclone-down"
