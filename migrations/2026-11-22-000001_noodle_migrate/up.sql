-- Our own tables carry a prefix no gallery table uses.
CREATE TABLE noodle_migrate_batch (
    id uuid PRIMARY KEY,
    direction varchar NOT NULL CHECK (direction IN ('toS3', 'toDisk')),
    state varchar NOT NULL,
    options jsonb NOT NULL,
    total bigint NOT NULL DEFAULT 0,
    completed bigint NOT NULL DEFAULT 0,
    adopted bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    bytes_moved bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz NULL,
    error text NULL
);
CREATE INDEX noodle_migrate_batch_started_at_idx ON noodle_migrate_batch (started_at);

-- One row per file that a batch failed or skipped, with its reason; the
-- latest attempt wins.
CREATE TABLE noodle_migrate_failure (
    batch_id uuid NOT NULL REFERENCES noodle_migrate_batch (id) ON DELETE CASCADE,
    kind varchar NOT NULL,
    entity_id uuid NOT NULL,
    path text NOT NULL,
    outcome varchar NOT NULL CHECK (outcome IN ('failed', 'skipped')),
    reason varchar NOT NULL,
    message text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (batch_id, kind, entity_id)
);
