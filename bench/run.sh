#!/usr/bin/env bash
# `make bench`: noodle-migrate against rclone (and aws s3 sync) on the same
# machine and the same files, against s3s-fs and Garage (bench/servers.sh),
# plus the scale rows (bench/scale-report.sh) and the scale-out rows
# (bench/scale-out.sh). Writes bench/results.md and bench/results-scale.md.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
WORK="$RUN_DIR/bench"
SCALE_ASSETS="${BENCH_SCALE_ASSETS:-1000000}"
RID=$(date +%s)
BUCKETS=()
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
  for b in "${BUCKETS[@]}"; do drop_bucket "$b"; done
}
trap cleanup EXIT
bucket() { make_bucket "$1-$RID"; BUCKETS+=("$1-$RID"); }

rm -rf "$WORK" && mkdir -p "$WORK"
echo "==> Building the release binary"
cargo build --release --quiet --bin noodle-migrate --example explain_ledger

schema() {
  psql "$BASE_URL/$1" -qtAX -f tests/it/fixtures/gallery_schema.sql -f tests/it/fixtures/gallery_log_table.sql >/dev/null
  psql "$BASE_URL/$1" -qX -c "INSERT INTO \"user\" (id, email) VALUES ('$OWNER', 'bench@example.test')"
}

# The scale rows (a whole library each way) write bench/results-scale.md.
bench/scale-report.sh

echo "==> Scale: $SCALE_ASSETS assets and their thumbnails and previews (rows only)"
bucket nm-scale
psqla -c "DROP DATABASE IF EXISTS bench_scale WITH (FORCE)" -c "CREATE DATABASE bench_scale"
schema bench_scale
psql "$BASE_URL/bench_scale" -qX \
  -c "INSERT INTO asset (id, \"deviceAssetId\", \"ownerId\", \"deviceId\", type, \"originalPath\", \"fileCreatedAt\", \"fileModifiedAt\", \"localDateTime\", checksum, \"originalFileName\") SELECT gen_random_uuid(), g::text, '$OWNER', 'bench', 'IMAGE', 'upload/$OWNER/' || g || '.jpg', now(), now(), now(), sha256(g::text::bytea), 'x.jpg' FROM generate_series(1, $SCALE_ASSETS) g" \
  -c "INSERT INTO asset_file (\"assetId\", type, path) SELECT id, t, 'thumbs/' || id || '_' || t || '.webp' FROM asset, (VALUES ('thumbnail'), ('preview')) v(t)" \
  -c "VACUUM ANALYZE"
PORT=$(free_port)
env -i PATH="$PATH" DB_URL="$BASE_URL/bench_scale" IMMICH_MEDIA_LOCATION="$WORK/scale" \
  IMMICH_STORAGE_BACKEND=s3 S3_BUCKET="nm-scale-$RID" S3_ENDPOINT="$ENDPOINT" S3_ACCESS_KEY_ID="$AK" \
  S3_SECRET_ACCESS_KEY="$SK" NOODLE_MIGRATE_LISTEN="127.0.0.1:$PORT" RUST_LOG=error "$BIN" serve &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
t=$(timed curl -sf "http://127.0.0.1:$PORT/storage-migration/estimate?direction=toS3")
R[est_s3]=$t
t=$(timed curl -sf "http://127.0.0.1:$PORT/storage-migration/estimate?direction=toDisk")
R[est_disk]=$t
start=$(now); code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/storage-migration/start" -d '{"direction":"toS3"}'); end=$(now)
R[rerun]=$(secs "$start" "$end"); R[rerun_code]=$code
R[scale_rss]=$(( $(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status") / 1024 ))
kill $SERVER; wait $SERVER 2>/dev/null || true
SERVER=

cpu=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
{
  echo "# Benchmark results"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d). Machine: $(nproc) cores ($cpu), $mem, Linux $(uname -r)."
  echo "PostgreSQL $(psqla -c 'SHOW server_version'); $(rclone version 2>/dev/null | head -1); $(aws --version 2>&1 | cut -d' ' -f1). The S3 servers are named in each section."
  echo "All numbers come from the same run; compare ratios, not absolute values."
  echo
  echo "| scenario | noodle-migrate |"
  echo "|---|---|"
  echo "| estimate, $SCALE_ASSETS assets + $((SCALE_ASSETS * 2)) asset_file rows | toS3 ${R[est_s3]} s, toDisk ${R[est_disk]} s |"
  echo "| re-run of a finished migration of that size | ${R[rerun]} s (HTTP ${R[rerun_code]}), engine peak RSS ${R[scale_rss]} MB |"
  echo
  echo "A whole library at scale, each way, is in [results-scale.md](results-scale.md) (bench/scale-report.sh, run by this script)."
  echo
  echo "<!-- servers -->"
  echo "<!-- /servers -->"
  echo
  echo "<!-- scale-out -->"
  echo "<!-- /scale-out -->"
} >bench/results.md
# Fill the rows between the markers.
bench/servers.sh >/dev/null
bench/scale-out.sh >/dev/null
cat bench/results.md
