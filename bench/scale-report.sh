#!/usr/bin/env bash
# The scale rows of `make bench` (also `make bench-scale` alone): a whole
# library of small files to S3 and back at two sizes, 5,000 files and
# $BENCH_SCALE_FILES (default 500,000), with rclone on the same files and
# server; what changes between the sizes is what grows with the work done.
# Writes bench/results-scale.md.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
FILES="${BENCH_SCALE_FILES:-500000}"
WORK="$RUN_DIR/bench-scale-report"
rm -rf "$WORK" && mkdir -p "$WORK"
echo "==> Building the release binary"
cargo build --release --quiet --bin noodle-migrate --example explain_ledger

bench/scale.sh 5000 20 >"$WORK/scale-5000.txt"
bench/scale.sh "$FILES" 20 >"$WORK/scale.txt"
cp "$RUN_DIR/bench-scale/explain.txt" "$WORK/explain.txt"

S() { awk -v k="$2" '$1 == k {$1 = ""; sub(/^ /, ""); print}' "$WORK/$1"; }
tenths() { python3 -c "import sys; r = [float(x) for x in sys.argv[1].split()]; print(f'{r[-1] / r[0]:.2f}')" "$1"; }
commas() { sed 's/ /, /g'; }
mb() { echo $(($1 / 1024)); }

cpu=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
n=$(S scale.txt files)
{
  echo "# Benchmark results at scale"
  echo
  echo "Written by \`bench/scale-report.sh\` (part of \`make bench\`; \`make bench-scale\` alone) on $(date -u +%Y-%m-%d). Machine: $(nproc) cores ($cpu), $mem, Linux $(uname -r)."
  echo "S3 server: a loopback s3s-fs of the bench's own ($(s3s-fs --version 2>/dev/null || echo 's3s-fs')); PostgreSQL $(S scale.txt postgres), a server of the bench's own with its default settings; $(rclone version 2>/dev/null | head -1)."
  echo "$n files of 1 KB (a seeded gallery's originals), concurrency 20, deleteSource, both ways through \`noodle-migrate serve\`; then rclone on the same files and server. The rate is sampled every second and split into tenths by files done. All numbers come from the same run."
  echo
  echo "| scenario | noodle-migrate | rclone | ratio |"
  echo "|---|---|---|---|"
  for way in up down; do
    if [ $way = up ]; then label="disk → S3"; else label="S3 → disk"; fi
    secs=$(S scale.txt ${way}_seconds)
    ref=$(S scale.txt rclone_${way}_seconds)
    echo "| $label, files/s over the run | $(rate "$n" 0 "$secs") | $(rate "$n" 0 "$ref") | $(ratio "$ref" "$secs") |"
    echo "| $label, files/s per tenth | $(S scale.txt ${way}_rate | commas) | $(S scale.txt rclone_${way}_rate | commas) | |"
    echo "| $label, last tenth / first | $(tenths "$(S scale.txt ${way}_rate)") | $(tenths "$(S scale.txt rclone_${way}_rate)") | |"
  done
  for way in up down; do
    if [ $way = up ]; then label="to S3"; else label="to disk"; fi
    echo "| CPU milliseconds per file, per tenth, $label | engine: $(S scale.txt ${way}_engine | commas); s3s-fs: $(S scale.txt ${way}_server | commas); PostgreSQL: $(S scale.txt ${way}_db | commas) | | |"
  done
  echo "| peak RSS of the engine (serve), 5000 → $n files | to S3: $(mb "$(S scale-5000.txt up_rss_kb)") → $(mb "$(S scale.txt up_rss_kb)") MB; to disk: $(mb "$(S scale-5000.txt down_rss_kb)") → $(mb "$(S scale.txt down_rss_kb)") MB | | |"
  echo "| database transactions per file (pg_stat_database) | to S3: $(S scale.txt up_xacts); to disk: $(S scale.txt down_xacts) | | |"
  echo "| orphan report and rollback, $n files and log rows | orphans $(S scale.txt orphans_seconds) s, rollback $(S scale.txt rollback_seconds) s; peak RSS $(mb "$(S scale.txt admin_rss_kb)") MB (at 5000: $(mb "$(S scale-5000.txt admin_rss_kb)") MB) | | |"
  echo
  echo "The ledger's statement at that size (examples/explain_ledger: 200 originals committed to the batch that moved all $n to S3):"
  echo
  fence='```'
  echo "$fence"
  cat "$WORK/explain.txt"
  echo "$fence"
} >bench/results-scale.md
cat bench/results-scale.md
