#!/usr/bin/env bash
# Makes sure the loopback S3 server (s3s-fs 0.14.1) runs on $S3_PORT,
# installing it with cargo when absent. Its data lives in $RUN_DIR/s3.
set -euo pipefail

S3_PORT="${S3_PORT:-8014}"
RUN_DIR="${RUN_DIR:-$(pwd)/.run}"
ACCESS_KEY="${TEST_S3_ACCESS_KEY:-nmtest}"
SECRET_KEY="${TEST_S3_SECRET_KEY:-nmtestsecret}"
export PATH="$HOME/.cargo/bin:$PATH"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; }

if listening; then
  exit 0
fi
if ! command -v s3s-fs >/dev/null; then
  echo "==> Installing s3s-fs 0.14.1 (cargo install; takes a few minutes once)"
  cargo install s3s-fs@0.14.1 --locked --features binary --quiet
fi
mkdir -p "$RUN_DIR/s3"
echo "==> Starting s3s-fs on 127.0.0.1:$S3_PORT"
nohup s3s-fs --host 127.0.0.1 --port "$S3_PORT" \
  --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$RUN_DIR/s3" \
  >"$RUN_DIR/s3s-fs.log" 2>&1 &
echo $! >"$RUN_DIR/s3s-fs.pid"
for _ in $(seq 1 50); do
  if listening; then exit 0; fi
  sleep 0.2
done
echo "s3s-fs did not start; see $RUN_DIR/s3s-fs.log" >&2
exit 1
