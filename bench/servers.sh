#!/usr/bin/env bash
# The transfer rows of `make bench`, once per S3 server: s3s-fs 0.14.1 and
# Garage 2.5.0 (a single node on loopback, installed on first use), or the
# one endpoint BENCH_S3_ENDPOINT names (labelled BENCH_S3_LABEL). Against
# each, on the same files and in the same run: noodle-migrate and rclone
# with the same concurrency, small files both ways, large files both ways,
# a remote bucket (bench/latency-proxy.py adds 20 ms to every request)
# both ways, and downloads through a proxy that answers at once (no
# delayed ACK). A bare client measures the server's own PUT and GET times
# first, and the upload bound (concurrency ÷ mean PUT time with as many in
# flight) again in each round, beside the engine's upload. Writes the rows
# between the servers markers of bench/results.md (bench/run.sh writes the
# markers).
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
for tool in rclone aws /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/ensure-bench-tools.sh (make bench does)" >&2; exit 1; }
done
cargo build --release --quiet --bin noodle-migrate
FILES="${BENCH_FILES:-5000}"
SIZE="${BENCH_FILE_SIZE:-30000}"
REMOTE_FILES="${BENCH_REMOTE_FILES:-2000}"
LARGE_COUNT="${BENCH_LARGE_COUNT:-8}"
LARGE_MB="${BENCH_LARGE_MB:-256}"
# Rounds of the rows the targets are read from (their median is reported).
# More is not better here: s3s-fs slows down as it fills, and in a run of
# five rounds (2026-12-06) its last rounds ran at the server's floor for
# both clients (uploads 577 and 482 files/s against rclone's 605 and 498).
ROUNDS="${BENCH_ROUNDS:-3}"
DELAY=0.020
WORK="$RUN_DIR/bench-servers"
RID=$(date +%s)
log() { echo "==> $*" >&2; }
rm -rf "$WORK" && mkdir -p "$WORK"
own_postgres
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$S3FS_PID" ] && kill "$S3FS_PID" 2>/dev/null
  stop_garage
  stop_postgres
  rm -rf "$WORK"
}
trap cleanup EXIT

fresh_db() { psqla -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1 TEMPLATE $2"; }
# Every timed small upload sends files of its own: Garage stores a block
# once per content, so a client that sent the same bytes after another
# would only add references to blocks already written. For noodle-migrate,
# a library with its database $2 under $WORK/$1; for rclone, the files.
# Written to disk before the clock starts.
nm_library() { seed_library "$2" "$WORK/$1" "$FILES" "$SIZE"; sync; }
rc_library() { python3 bench/seed.py "$WORK/$1" "$OWNER" "$FILES" "$SIZE" >/dev/null; sync; }
xacts() { psqla -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }
pct() { python3 -c "print(f'{100 * $1 / $2:.0f} %')"; }
# The upload bound at concurrency 5, in files/s, from a mean PUT time in ms.
bound_of() { python3 -c "print(f'{5 / ($1 / 1000):.0f}')"; }
mean() { python3 -c "import statistics, sys; print(f'{statistics.mean(map(float, sys.argv[1:])):.3f}')" "$@"; }
# The mean PUT times (plain, then as a migration sends them) of 1000 PUTs
# over five connections from a settled machine, into a bucket of their own
# named after $1: "plain_ms shaped_ms".
bound_puts() {
  make_bucket "$(b "$1")"
  settle
  python3 bench/bare-client.py "$ENDPOINT" "$(b "$1")" 1000 "$SIZE" "$AK" "$SK" 5 bound |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(d['put_concurrent_ms'], d['shaped_concurrent_ms'])"
}
median() { python3 -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" "$@"; }
max() { python3 -c "import sys; print(max(map(int, sys.argv[1:])))" "$@"; }
# A proxy in front of $ENDPOINT that adds $1 seconds per request; sets
# PROXY to its endpoint.
PROXY=
start_proxy() {
  local port
  port=$(free_port)
  python3 bench/latency-proxy.py "$port" "${ENDPOINT#http://}" "$1" >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  PROXY="http://127.0.0.1:$port"
}

log "Seeding $FILES files of $SIZE bytes, $REMOTE_FILES for the remote rows, $LARGE_COUNT of $LARGE_MB MB"
seed_library bench_small "$WORK/small" "$FILES" "$SIZE"
seed_library bench_remote "$WORK/remote" "$REMOTE_FILES" "$SIZE"
seed_library bench_large "$WORK/large" "$LARGE_COUNT" "$((LARGE_MB * 1024 * 1024))"
sync
MB=$((LARGE_COUNT * LARGE_MB))

# The rows of one server, as markdown, on standard output.
bench_server() {
  local label=$1 t rss x0 x1 bound quick remote put get get_qa
  declare -A R
  b() { echo "$1-$RID"; }
  log "$label: bare client"
  make_bucket "$(b bare)"
  settle
  read -r put get get_qa put_c shaped shaped_c < <(python3 bench/bare-client.py "$ENDPOINT" "$(b bare)" 1000 "$SIZE" "$AK" "$SK" 5 |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(d['put_ms'], d['get_ms'], d['get_quickack_ms'], d['put_concurrent_ms'], d['shaped_ms'], d['shaped_concurrent_ms'])")
  R[put_ms]=$put; R[get_ms]=$get; R[get_qa_ms]=$get_qa; R[put_c_ms]=$put_c
  R[shaped_ms]=$shaped; R[shaped_c_ms]=$shaped_c

  # The rows the targets are read from, $ROUNDS rounds each, the clients'
  # order alternating from round to round (the server slows down as it
  # fills, and this machine's speed drifts): the medians are reported.
  start_proxy 0; quick=$PROXY
  local up_nm=() up_rc=() down_nm=() down_rc=() quick_nm=() quick_rc=() lup_nm=() lup_rc=() ldown_nm=() ldown_rc=()
  local bound_r=() bound_pre_r=() bound_post_r=() shaped_r=() pct_r=() pct_shaped_r=() pc sc pc0 sc0 pc1 sc1
  local round order client
  for round in $(seq 1 "$ROUNDS"); do
    order="nm rc"; [ $((round % 2)) = 0 ] && order="rc nm"
    log "$label: round $round of $ROUNDS ($order): $FILES small files up and down at concurrency 5, $LARGE_COUNT × $LARGE_MB MB"
    for client in $order; do
      if [ "$client" = nm ]; then
        nm_library "up-$round-nm" bench_run; make_bucket "$(b nm-small-5-$round)"
        # The bound of this round, measured just before the upload and
        # again just after it: the server's PUTs cost more as it fills
        # (s3s-fs keeps a file and its folders per object; Garage's PUTs
        # drift by a fifth within a minute), so one measured at the start
        # holds only for the first round, and one measured before the
        # upload alone misses what the server did during it. The bound is
        # 5 ÷ the mean of the two PUT times.
        read -r pc0 sc0 < <(bound_puts "bound-$round")
        x0=$(xacts bench_run)
        read -r t rss < <(nm_run bench_run "$WORK/up-$round-nm" s3 toS3 5 "$(b nm-small-5-$round)")
        x1=$(xacts bench_run)
        read -r pc1 sc1 < <(bound_puts "bound-after-$round")
        pc=$(mean "$pc0" "$pc1"); sc=$(mean "$sc0" "$sc1")
        up_nm+=("$(rate "$FILES" 0 "$t")"); R[rss_5]=$((rss / 1024))
        bound_r+=("$(bound_of "$pc")")
        bound_pre_r+=("$(bound_of "$pc0")"); bound_post_r+=("$(bound_of "$pc1")")
        shaped_r+=("$(bound_of "$sc")")
        pct_r+=("$(python3 -c "print(f'{100 * ${up_nm[-1]} / ${bound_r[-1]}:.0f}')")")
        pct_shaped_r+=("$(python3 -c "print(f'{100 * ${up_nm[-1]} / ${shaped_r[-1]}:.0f}')")")
        R[xact_5]=$(python3 -c "print(f'{($x1 - $x0) / $FILES:.3f}')")
        R[ledger_5]=$(python3 -c "import json; print(f\"{json.load(open('$WORK/last-run.json'))['ledgerCommits'] / $FILES:.4f}\")")
        [ "$round" = 1 ] && fresh_db bench_small_s3 bench_run
      else
        rc_library "up-$round-rc"; make_bucket "$(b rc-small-5-$round)"
        up_rc+=("$(rate "$FILES" 0 "$(timed rclone copy -q --transfers 5 "$WORK/up-$round-rc" "bench:$(b rc-small-5-$round)")")")
      fi
    done
    # Downloads, straight and through the quick proxy, all from the first
    # round's bucket.
    for client in $order; do
      if [ "$client" = nm ]; then
        fresh_db bench_back bench_small_s3
        read -r t rss < <(nm_run bench_back "$WORK/down-nm" disk toDisk 5 "$(b nm-small-5-1)")
        down_nm+=("$(rate "$FILES" 0 "$t")"); rm -rf "$WORK/down-nm"
        fresh_db bench_back bench_small_s3
        read -r t rss < <(nm_run bench_back "$WORK/down-nm" disk toDisk 5 "$(b nm-small-5-1)" "$quick")
        quick_nm+=("$(rate "$FILES" 0 "$t")"); rm -rf "$WORK/down-nm"
      else
        down_rc+=("$(rate "$FILES" 0 "$(timed rclone copy -q --transfers 5 "bench:$(b nm-small-5-1)" "$WORK/down-rc")")")
        rm -rf "$WORK/down-rc"
        quick_rc+=("$(rate "$FILES" 0 "$(timed rclone_via "$quick" copy -q --transfers 5 "bench:$(b nm-small-5-1)" "$WORK/down-rc")")")
        rm -rf "$WORK/down-rc"
      fi
    done
    for client in $order; do
      if [ "$client" = nm ]; then
        fresh_db bench_run bench_large; make_bucket "$(b nm-large-$round)"
        read -r t rss < <(nm_run bench_run "$WORK/large" s3 toS3 5 "$(b nm-large-$round)")
        lup_nm+=("$(rate "$MB" 0 "$t")"); R[rss_large_up]=$(max "${R[rss_large_up]:-0}" $((rss / 1024)))
        read -r t rss < <(nm_run bench_run "$WORK/down-nm" disk toDisk 5 "$(b nm-large-$round)")
        ldown_nm+=("$(rate "$MB" 0 "$t")"); R[rss_large_down]=$(max "${R[rss_large_down]:-0}" $((rss / 1024)))
        rm -rf "$WORK/down-nm"
      else
        make_bucket "$(b rc-large-$round)"
        lup_rc+=("$(rate "$MB" 0 "$(timed rclone copy -q --transfers 5 "$WORK/large" "bench:$(b rc-large-$round)")")")
        ldown_rc+=("$(rate "$MB" 0 "$(timed rclone copy -q --transfers 5 "bench:$(b rc-large-$round)" "$WORK/down-rc")")")
        rm -rf "$WORK/down-rc"
      fi
    done
    drop_bucket "$(b rc-small-5-$round)"; drop_bucket "$(b nm-large-$round)"; drop_bucket "$(b rc-large-$round)"
    drop_bucket "$(b bound-$round)"; drop_bucket "$(b bound-after-$round)"
    rm -rf "$WORK/up-$round-nm" "$WORK/up-$round-rc"
    [ "$round" = 1 ] || drop_bucket "$(b nm-small-5-$round)"
  done
  R[nm_up_5]=$(median "${up_nm[@]}"); R[rc_up_5]=$(median "${up_rc[@]}")
  R[nm_down_5]=$(median "${down_nm[@]}"); R[rc_down_5]=$(median "${down_rc[@]}")
  R[nm_quick]=$(median "${quick_nm[@]}"); R[rc_quick]=$(median "${quick_rc[@]}")
  R[nm_large_up]=$(median "${lup_nm[@]}"); R[rc_large_up]=$(median "${lup_rc[@]}")
  R[nm_large_down]=$(median "${ldown_nm[@]}"); R[rc_large_down]=$(median "${ldown_rc[@]}")
  R[runs_up]="${up_nm[*]} / ${up_rc[*]}"; R[runs_down]="${down_nm[*]} / ${down_rc[*]}"
  R[runs_quick]="${quick_nm[*]} / ${quick_rc[*]}"
  R[runs_lup]="${lup_nm[*]} / ${lup_rc[*]}"; R[runs_ldown]="${ldown_nm[*]} / ${ldown_rc[*]}"
  R[runs_bound]="${bound_r[*]}"; R[runs_shaped]="${shaped_r[*]}"
  R[runs_bound_pre]="${bound_pre_r[*]}"; R[runs_bound_post]="${bound_post_r[*]}"
  R[pct]=$(median "${pct_r[@]}"); R[pct_shaped]=$(median "${pct_shaped_r[@]}")
  R[runs_pct]="${pct_r[*]}"; R[runs_pct_shaped]="${pct_shaped_r[*]}"

  log "$label: $FILES small files up and down, concurrency 20"
  nm_library up-20-nm bench_run; make_bucket "$(b nm-small-20)"
  x0=$(xacts bench_run)
  read -r t rss < <(nm_run bench_run "$WORK/up-20-nm" s3 toS3 20 "$(b nm-small-20)")
  x1=$(xacts bench_run)
  R[nm_up_20]=$(rate "$FILES" 0 "$t"); R[rss_20]=$((rss / 1024))
  R[xact_20]=$(python3 -c "print(f'{($x1 - $x0) / $FILES:.3f}')")
  R[ledger_20]=$(python3 -c "import json; print(f\"{json.load(open('$WORK/last-run.json'))['ledgerCommits'] / $FILES:.4f}\")")
  rc_library up-20-rc; make_bucket "$(b rc-small-20)"
  R[rc_up_20]=$(rate "$FILES" 0 "$(timed rclone copy -q --transfers 20 "$WORK/up-20-rc" "bench:$(b rc-small-20)")")
  fresh_db bench_back bench_run
  read -r t rss < <(nm_run bench_back "$WORK/down-nm" disk toDisk 20 "$(b nm-small-20)")
  R[nm_down_20]=$(rate "$FILES" 0 "$t")
  R[rc_down_20]=$(rate "$FILES" 0 "$(timed rclone copy -q --transfers 20 "bench:$(b nm-small-20)" "$WORK/down-rc")")
  rm -rf "$WORK/down-nm" "$WORK/down-rc" "$WORK/up-20-nm" "$WORK/up-20-rc"
  make_bucket "$(b aws-small)"
  R[aws_up]=$(rate "$FILES" 0 "$(timed aws --endpoint-url "$ENDPOINT" s3 sync --only-show-errors "$WORK/small" "s3://$(b aws-small)")")

  start_proxy "$DELAY"; remote=$PROXY
  for c in 5 20; do
    log "$label: remote bucket (+20 ms per request), $REMOTE_FILES files, concurrency $c"
    fresh_db bench_run bench_remote; make_bucket "$(b nm-remote-$c)"; make_bucket "$(b rc-remote-$c)"
    read -r t rss < <(nm_run bench_run "$WORK/remote" s3 toS3 "$c" "$(b nm-remote-$c)" "$remote")
    R[nm_rup_$c]=$(rate "$REMOTE_FILES" 0 "$t")
    R[rc_rup_$c]=$(rate "$REMOTE_FILES" 0 "$(timed rclone_via "$remote" copy -q --transfers "$c" "$WORK/remote" "bench:$(b rc-remote-$c)")")
    read -r t rss < <(nm_run bench_run "$WORK/down-nm" disk toDisk "$c" "$(b nm-remote-$c)" "$remote")
    R[nm_rdown_$c]=$(rate "$REMOTE_FILES" 0 "$t")
    R[rc_rdown_$c]=$(rate "$REMOTE_FILES" 0 "$(timed rclone_via "$remote" copy -q --transfers "$c" "bench:$(b rc-remote-$c)" "$WORK/down-rc")")
    rm -rf "$WORK/down-nm" "$WORK/down-rc"
  done

  # The bound: concurrency ÷ the mean PUT time the bare client measures
  # with as many PUTs in flight (what the server does at concurrency 5 on
  # this machine); beside it, the same with one PUT at a time, which holds
  # only if the server scales without limit.
  bound=$(bound_of "${R[put_c_ms]}")
  bound_one=$(bound_of "${R[put_ms]}")
  # The same for the PUT a migration has to send (conditional, with its
  # digest and metadata).
  bound_shaped=$(bound_of "${R[shaped_c_ms]}")
  # What one file costs through the proxy at best: the 20 ms, plus the
  # server's own time for the one request each file needs (a PUT: the
  # bucket's listing spares the HEAD; a GET).
  rbound_up() { python3 -c "print(f'{$1 / (0.020 + ${R[put_ms]} / 1000):.0f}')"; }
  rbound_down() { python3 -c "print(f'{$1 / (0.020 + ${R[get_qa_ms]} / 1000):.0f}')"; }
  echo
  echo "### $label"
  echo
  echo "Bare client, requests signed before the clock starts, $SIZE-byte objects, each with bytes of its own. One kept-alive connection: PUT ${R[put_ms]} ms, GET ${R[get_ms]} ms (${R[get_qa_ms]} ms when it re-arms TCP_QUICKACK before every read). Five connections at once: PUT ${R[put_c_ms]} ms, so 5 ÷ ${R[put_c_ms]} ms = $bound files/s at the start of the run (5 ÷ the one-connection PUT time would be $bound_one). The PUT a migration sends (If-None-Match, the SHA-1 as x-amz-checksum-sha1 and as metadata, Content-Type, payload unsigned), at keys shaped as a migration writes them (upload/<owner>/<xx>/<yy>/<uuid>.jpg): ${R[shaped_ms]} ms on one connection, ${R[shaped_c_ms]} ms with five at once ($bound_shaped files/s)."
  echo
  echo "The upload bound at concurrency 5 is measured again in each round, just before noodle-migrate's upload and just after it (1000 PUTs over five connections, each kind, from a settled machine): the server's PUTs cost more as it fills, and drift meanwhile. A round's bound is 5 ÷ the mean of its two PUT times. Each round's bound, plain PUT: ${R[runs_bound]} files/s (before the upload ${R[runs_bound_pre]}, after it ${R[runs_bound_post]}); the PUT a migration sends: ${R[runs_shaped]} files/s. noodle-migrate's upload of that round reached ${R[runs_pct]} % of the first and ${R[runs_pct_shaped]} % of the second."
  echo
  echo "Rows marked † are the median of $ROUNDS rounds, the clients taking turns to go first (each round's figures, noodle-migrate / rclone: up ${R[runs_up]}; down ${R[runs_down]}; through the quick proxy ${R[runs_quick]}; large up ${R[runs_lup]}; large down ${R[runs_ldown]})."
  echo
  echo "| scenario | noodle-migrate | rclone, same concurrency | ratio |"
  echo "|---|---|---|---|"
  echo "| $FILES × $SIZE B, disk → S3, c=5 † | ${R[nm_up_5]} files/s (median of the rounds: ${R[pct]} % of their bound, ${R[pct_shaped]} % of the migration PUT's) | ${R[rc_up_5]} files/s | $(ratio "${R[nm_up_5]}" "${R[rc_up_5]}") |"
  echo "| $FILES × $SIZE B, disk → S3, c=20 | ${R[nm_up_20]} files/s | ${R[rc_up_20]} files/s | $(ratio "${R[nm_up_20]}" "${R[rc_up_20]}") |"
  echo "| $FILES × $SIZE B, disk → S3, aws s3 sync | | ${R[aws_up]} files/s (aws) | $(ratio "${R[nm_up_5]}" "${R[aws_up]}") (c=5) |"
  echo "| $FILES × $SIZE B, S3 → disk, c=5 † | ${R[nm_down_5]} files/s | ${R[rc_down_5]} files/s | $(ratio "${R[nm_down_5]}" "${R[rc_down_5]}") |"
  echo "| $FILES × $SIZE B, S3 → disk, c=20 | ${R[nm_down_20]} files/s | ${R[rc_down_20]} files/s | $(ratio "${R[nm_down_20]}" "${R[rc_down_20]}") |"
  echo "| $FILES × $SIZE B, S3 → disk, c=5, through a proxy that answers at once † | ${R[nm_quick]} files/s | ${R[rc_quick]} files/s | $(ratio "${R[nm_quick]}" "${R[rc_quick]}") |"
  echo "| $LARGE_COUNT × $LARGE_MB MB, disk → S3, c=5 † | ${R[nm_large_up]} MB/s, peak RSS ${R[rss_large_up]} MB | ${R[rc_large_up]} MB/s | $(ratio "${R[nm_large_up]}" "${R[rc_large_up]}") |"
  echo "| $LARGE_COUNT × $LARGE_MB MB, S3 → disk, c=5 † | ${R[nm_large_down]} MB/s, peak RSS ${R[rss_large_down]} MB | ${R[rc_large_down]} MB/s | $(ratio "${R[nm_large_down]}" "${R[rc_large_down]}") |"
  for c in 5 20; do
    echo "| remote (+20 ms), $REMOTE_FILES × $SIZE B, disk → S3, c=$c | ${R[nm_rup_$c]} files/s (bound $(rbound_up "$c")) | ${R[rc_rup_$c]} files/s | $(ratio "${R[nm_rup_$c]}" "${R[rc_rup_$c]}") |"
    echo "| remote (+20 ms), $REMOTE_FILES × $SIZE B, S3 → disk, c=$c | ${R[nm_rdown_$c]} files/s (bound $(rbound_down "$c")) | ${R[rc_rdown_$c]} files/s | $(ratio "${R[nm_rdown_$c]}" "${R[rc_rdown_$c]}") |"
  done
  echo "| ledger transactions per file (c=5, c=20) | ${R[ledger_5]}, ${R[ledger_20]} | | |"
  echo "| all database transactions per file, start-up included (c=5, c=20) | ${R[xact_5]}, ${R[xact_20]} | | |"
  echo "| peak RSS, small files (c=5, c=20) | ${R[rss_5]} MB, ${R[rss_20]} MB | | |"
}

OUT="$WORK/rows.md"
: >"$OUT"
if [ -n "${BENCH_S3_ENDPOINT:-}" ]; then
  bench_server "${BENCH_S3_LABEL:-$BENCH_S3_ENDPOINT}" >>"$OUT"
else
  own_s3s_fs "$WORK/s3"
  bench_server "s3s-fs $(s3s-fs --version 2>/dev/null | awk '{print $NF}')" >>"$OUT"
  kill "$S3FS_PID"; S3FS_PID=
  rm -rf "$WORK/s3"
  own_garage "$WORK/garage"
  bench_server "Garage $("$GARAGE" --version | awk '{print $2}' | sed 's/^cargo://')" >>"$OUT"
  stop_garage
  rm -rf "$WORK/garage"
fi

{
  echo "## Transfers, per S3 server ($(date -u +%Y-%m-%d), bench/servers.sh)"
  echo
  echo "Every row of a server comes from the same run, with the same files and the same settings for both clients; the servers run on this machine, on loopback. \"Remote\" goes through bench/latency-proxy.py, which adds 20 ms to every S3 request; its bound is concurrency ÷ (20 ms + the bare client's time for the one request a file needs). The proxy that \"answers at once\" adds nothing and acknowledges the server at once: there the delayed ACK costs no client anything."
  cat "$OUT"
} >"$WORK/section.md"
python3 - "$WORK/section.md" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n")
path = "bench/results.md"
text = open(path).read()
begin, end = "<!-- servers -->", "<!-- /servers -->"
if begin not in text:
    text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{section}\n{end}", text, flags=re.S)
open(path, "w").write(text)
PY
cat "$WORK/section.md"
