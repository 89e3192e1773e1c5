#!/usr/bin/env bash
# `make demo`: a local gallery database seeded with a small library, a
# loopback S3 server, and noodle-migrate serving its API on top of them.
set -euo pipefail

RUN_DIR="${RUN_DIR:-$(pwd)/.run}"
DEMO="$RUN_DIR/demo"
ADMIN_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
DB_URL="${ADMIN_URL%/*}/noodle_demo"
S3_PORT="${S3_PORT:-8014}"
ENDPOINT="http://127.0.0.1:$S3_PORT"
BUCKET=noodle-demo
LISTEN="${NOODLE_MIGRATE_LISTEN:-127.0.0.1:8385}"
BIN="${CARGO_TARGET_DIR:-target}/debug/noodle-migrate"

echo "==> Seeding the demo gallery"
psql "$ADMIN_URL" -qc 'DROP DATABASE IF EXISTS noodle_demo WITH (FORCE)' -c 'CREATE DATABASE noodle_demo'
rm -rf "$DEMO" "$RUN_DIR/s3/$BUCKET"
mkdir -p "$DEMO/media" "$DEMO/outside"
cargo run --quiet --example seed -- "$DB_URL" "$DEMO/media" "$DEMO/outside" "$ENDPOINT" "$BUCKET"
# An admin with an API key, as the gallery stores it (SHA-256), to try the
# gallery's own contract under /api.
API_KEY=demo-admin-api-key
psql "$DB_URL" -q \
  -c "UPDATE \"user\" SET \"isAdmin\" = true WHERE email = 'user0@example.test'" \
  -c "INSERT INTO api_key (name, key, \"userId\", permissions)
      SELECT 'demo', sha256('$API_KEY'::bytea), id, '{all}' FROM \"user\" WHERE email = 'user0@example.test'"

cat >"$DEMO/gallery.env" <<ENV
DB_URL=$DB_URL
IMMICH_MEDIA_LOCATION=$DEMO/media
IMMICH_STORAGE_BACKEND=s3
S3_BUCKET=$BUCKET
S3_ENDPOINT=$ENDPOINT
S3_FORCE_PATH_STYLE=true
S3_ACCESS_KEY_ID=${TEST_S3_ACCESS_KEY:-nmtest}
S3_SECRET_ACCESS_KEY=${TEST_S3_SECRET_KEY:-nmtestsecret}
NOODLE_MIGRATE_LISTEN=$LISTEN
ENV

URL="http://$LISTEN"
cat <<TXT

noodle-migrate is starting on $URL (settings: $DEMO/gallery.env). Try, from another terminal:

  curl -s '$URL/storage-migration/estimate?direction=toS3'
  curl -s -X POST $URL/storage-migration/start -H 'content-type: application/json' -d '{"direction":"toS3"}'
  curl -s $URL/storage-migration/status
  curl -s -X POST $URL/storage-migration/rollback/<batchId>

the gallery's own contract, with a gallery API key (an admin's, as the gallery checks it):

  curl -s -H 'x-api-key: $API_KEY' $URL/api/storage-migration/status

and back to disk (switch the gallery's backend first; the engine re-reads the file):

  sed -i 's/^IMMICH_STORAGE_BACKEND=.*/IMMICH_STORAGE_BACKEND=disk/' $DEMO/gallery.env
  curl -s -X POST $URL/storage-migration/start -H 'content-type: application/json' -d '{"direction":"toDisk","deleteSource":true}'

Stop with Ctrl-C.

TXT
exec "$BIN" --env-file "$DEMO/gallery.env" serve
