#!/usr/bin/env bash
# `make bench`: noodle-migrate against rclone (and aws s3 sync) on the same
# machine, the same loopback S3 server and the same files, in one run.
# Prints a table and writes bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
WORK="$RUN_DIR/bench"
FILES="${BENCH_FILES:-5000}"
FILE_SIZE="${BENCH_FILE_SIZE:-30000}"
LARGE_COUNT="${BENCH_LARGE_COUNT:-8}"
LARGE_MB="${BENCH_LARGE_MB:-256}"
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
fresh_db() { psqla -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1 TEMPLATE $2"; }
xacts() { psqla -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }

# noodle-migrate run: DB media backend direction concurrency → "seconds peakRSS_kB"
nm_run() {
  local db=$1 media=$2 backend=$3 direction=$4 conc=$5 bkt=$6
  local start end rss
  start=$(now)
  rss=$(env -i PATH="$PATH" DB_URL="$BASE_URL/$db" IMMICH_MEDIA_LOCATION="$media" \
    IMMICH_STORAGE_BACKEND="$backend" S3_BUCKET="$bkt" S3_ENDPOINT="$ENDPOINT" \
    S3_ACCESS_KEY_ID="$AK" S3_SECRET_ACCESS_KEY="$SK" RUST_LOG=error \
    /usr/bin/time -f "%M" "$BIN" run --direction "$direction" --concurrency "$conc" --json 2>&1 >"$WORK/last-run.json" | tail -1)
  end=$(now)
  if ! grep -q '"failed": 0' "$WORK/last-run.json" || ! grep -q '"skipped": 0' "$WORK/last-run.json"; then
    echo "noodle-migrate did not move every file:" >&2; cat "$WORK/last-run.json" >&2; exit 1
  fi
  echo "$(secs "$start" "$end") $rss"
}

rm -rf "$WORK" && mkdir -p "$WORK"
echo "==> Building the release binary"
cargo build --release --quiet --bin noodle-migrate --example explain_ledger

schema() {
  psql "$BASE_URL/$1" -qtAX -f tests/it/fixtures/gallery_schema.sql -f tests/it/fixtures/gallery_log_table.sql >/dev/null
  psql "$BASE_URL/$1" -qX -c "INSERT INTO \"user\" (id, email) VALUES ('$OWNER', 'bench@example.test')"
}
load_assets() { # db csv
  psql "$BASE_URL/$1" -qX -c "CREATE TEMP TABLE s (id uuid, owner uuid, path text, sha text, size bigint)" \
    -c "\\copy s FROM '$2' WITH (FORMAT csv)" \
    -c "INSERT INTO asset (id, \"deviceAssetId\", \"ownerId\", \"deviceId\", type, \"originalPath\", \"fileCreatedAt\", \"fileModifiedAt\", \"localDateTime\", checksum, \"originalFileName\") SELECT id, id::text, owner, 'bench', 'IMAGE', path, now(), now(), now(), decode(sha, 'hex'), 'x.jpg' FROM s" \
    -c "INSERT INTO asset_exif (\"assetId\", \"fileSizeInByte\") SELECT id, size FROM s"
}

echo "==> Small files: $FILES × $FILE_SIZE bytes"
psqla -c "DROP DATABASE IF EXISTS bench_small WITH (FORCE)" -c "CREATE DATABASE bench_small"
schema bench_small
python3 bench/seed.py "$WORK/small" "$OWNER" "$FILES" "$FILE_SIZE" >"$WORK/small.csv"
load_assets bench_small "$WORK/small.csv"
sync

declare -A R
for c in 5 20; do
  fresh_db bench_run bench_small; bucket "nm-small-$c"
  x0=$(xacts bench_run)
  nm_run bench_run "$WORK/small" s3 toS3 "$c" "nm-small-$c-$RID" >"$WORK/t"; read -r t rss <"$WORK/t"
  x1=$(xacts bench_run)
  R[nm_up_$c]=$(rate "$FILES" 0 "$t"); R[nm_up_rss_$c]=$rss; R[xact_$c]=$(python3 -c "print(f'{($x1 - $x0) / $FILES:.3f}')")
  R[ledger_$c]=$(python3 -c "import json; print(f\"{json.load(open('$WORK/last-run.json'))['ledgerCommits'] / $FILES:.4f}\")")
  [ "$c" = 5 ] && psqla -c "DROP DATABASE IF EXISTS bench_s3 WITH (FORCE)" -c "CREATE DATABASE bench_s3 TEMPLATE bench_run"
  bucket "rc-small-$c"
  t=$(timed rclone copy -q --transfers "$c" "$WORK/small" "bench:rc-small-$c-$RID")
  R[rc_up_$c]=$(rate "$FILES" 0 "$t")
done
bucket aws-small
t=$(timed aws --endpoint-url "$ENDPOINT" s3 sync "$WORK/small" s3://aws-small-$RID)
R[aws_up]=$(rate "$FILES" 0 "$t")

for c in 5 20; do
  fresh_db bench_run bench_s3
  nm_run bench_run "$WORK/back-nm-$c" disk toDisk "$c" "nm-small-5-$RID" >"$WORK/t"; read -r t rss <"$WORK/t"
  R[nm_down_$c]=$(rate "$FILES" 0 "$t")
  t=$(timed rclone copy -q --transfers "$c" "bench:nm-small-5-$RID" "$WORK/back-rc-$c")
  R[rc_down_$c]=$(rate "$FILES" 0 "$t")
done

echo "==> Large files: $LARGE_COUNT × $LARGE_MB MB"
psqla -c "DROP DATABASE IF EXISTS bench_large WITH (FORCE)" -c "CREATE DATABASE bench_large"
schema bench_large
python3 bench/seed.py "$WORK/large" "$OWNER" "$LARGE_COUNT" "$((LARGE_MB * 1024 * 1024))" >"$WORK/large.csv"
load_assets bench_large "$WORK/large.csv"
sync
MB=$((LARGE_COUNT * LARGE_MB))
bucket nm-large
nm_run bench_large "$WORK/large" s3 toS3 5 "nm-large-$RID" >"$WORK/t"; read -r t rss <"$WORK/t"
R[nm_large]=$(rate "$MB" 0 "$t"); R[nm_large_rss]=$((rss / 1024))
bucket rc-large
t=$(timed rclone copy -q --transfers 5 "$WORK/large" "bench:rc-large-$RID")
R[rc_large]=$(rate "$MB" 0 "$t")
rm -rf "$WORK/large"

# The scale rows (a whole library each way) write bench/results-scale.md.
bench/scale-report.sh

echo "==> Scale: $SCALE_ASSETS assets and their thumbnails and previews (rows only)"
psqla -c "DROP DATABASE IF EXISTS bench_scale WITH (FORCE)" -c "CREATE DATABASE bench_scale"
schema bench_scale
psql "$BASE_URL/bench_scale" -qX \
  -c "INSERT INTO asset (id, \"deviceAssetId\", \"ownerId\", \"deviceId\", type, \"originalPath\", \"fileCreatedAt\", \"fileModifiedAt\", \"localDateTime\", checksum, \"originalFileName\") SELECT gen_random_uuid(), g::text, '$OWNER', 'bench', 'IMAGE', 'upload/$OWNER/' || g || '.jpg', now(), now(), now(), sha256(g::text::bytea), 'x.jpg' FROM generate_series(1, $SCALE_ASSETS) g" \
  -c "INSERT INTO asset_file (\"assetId\", type, path) SELECT id, t, 'thumbs/' || id || '_' || t || '.webp' FROM asset, (VALUES ('thumbnail'), ('preview')) v(t)" \
  -c "VACUUM ANALYZE"
PORT=$(free_port)
env -i PATH="$PATH" DB_URL="$BASE_URL/bench_scale" IMMICH_MEDIA_LOCATION="$WORK/scale" \
  IMMICH_STORAGE_BACKEND=s3 S3_BUCKET="nm-small-5-$RID" S3_ENDPOINT="$ENDPOINT" S3_ACCESS_KEY_ID="$AK" \
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
  echo "S3 server: $ENDPOINT ($(s3s-fs --version 2>/dev/null || echo 'custom')); PostgreSQL $(psqla -c 'SHOW server_version'); $(rclone version 2>/dev/null | head -1); $(aws --version 2>&1 | cut -d' ' -f1)."
  echo "All numbers come from the same run; compare ratios, not absolute values."
  echo
  echo "| scenario | noodle-migrate | reference | ratio |"
  echo "|---|---|---|---|"
  echo "| $FILES × $FILE_SIZE B, disk → S3, concurrency 5 | ${R[nm_up_5]} files/s | rclone --transfers 5: ${R[rc_up_5]} files/s | $(ratio "${R[nm_up_5]}" "${R[rc_up_5]}") |"
  echo "| $FILES × $FILE_SIZE B, disk → S3, concurrency 20 | ${R[nm_up_20]} files/s | rclone --transfers 20: ${R[rc_up_20]} files/s | $(ratio "${R[nm_up_20]}" "${R[rc_up_20]}") |"
  echo "| $FILES × $FILE_SIZE B, disk → S3 | | aws s3 sync: ${R[aws_up]} files/s | $(ratio "${R[nm_up_5]}" "${R[aws_up]}") (c=5) |"
  echo "| $FILES × $FILE_SIZE B, S3 → disk, concurrency 5 | ${R[nm_down_5]} files/s | rclone --transfers 5: ${R[rc_down_5]} files/s | $(ratio "${R[nm_down_5]}" "${R[rc_down_5]}") |"
  echo "| $FILES × $FILE_SIZE B, S3 → disk, concurrency 20 | ${R[nm_down_20]} files/s | rclone --transfers 20: ${R[rc_down_20]} files/s | $(ratio "${R[nm_down_20]}" "${R[rc_down_20]}") |"
  echo "| $LARGE_COUNT × $LARGE_MB MB, disk → S3 | ${R[nm_large]} MB/s, peak RSS ${R[nm_large_rss]} MB | rclone --transfers 5: ${R[rc_large]} MB/s | $(ratio "${R[nm_large]}" "${R[rc_large]}") |"
  echo "| estimate, $SCALE_ASSETS assets + $((SCALE_ASSETS * 2)) asset_file rows | toS3 ${R[est_s3]} s, toDisk ${R[est_disk]} s | | |"
  echo "| re-run of a finished migration of that size | ${R[rerun]} s (HTTP ${R[rerun_code]}), engine peak RSS ${R[scale_rss]} MB | | |"
  echo "| ledger transactions per migrated file (the run's ledgerCommits; each is one round trip) | c=5: ${R[ledger_5]}, c=20: ${R[ledger_20]} | target ≤ 0.02 | |"
  echo "| all database transactions per migrated file, start-up included (pg_stat_database) | c=5: ${R[xact_5]}, c=20: ${R[xact_20]} | | |"
  echo "| peak RSS, small files | c=5: $((R[nm_up_rss_5] / 1024)) MB, c=20: $((R[nm_up_rss_20] / 1024)) MB | | |"
  echo
  echo "A whole library at scale, each way, is in [results-scale.md](results-scale.md) (bench/scale-report.sh, run by this script)."
  echo
  echo "<!-- scale-out -->"
  echo "<!-- /scale-out -->"
} >bench/results.md
# Fills the scale-out rows between the markers.
bench/scale-out.sh >/dev/null
cat bench/results.md
