-- A batch is cut into chunks of candidate rows (one kind, a range of row
-- ids) that any number of processes lease, move and mark done. The lease
-- token fences a process whose lease was taken over: its ledger commits
-- name the token, and a commit whose token is gone writes nothing.
CREATE TABLE noodle_migrate_chunk (
    batch_id uuid NOT NULL REFERENCES noodle_migrate_batch (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    kind varchar NOT NULL,
    -- Rows with after_id < id <= last_id.
    after_id uuid NOT NULL,
    last_id uuid NOT NULL,
    -- Only the rows that failed in the batch (a retry).
    failed_only boolean NOT NULL DEFAULT false,
    state varchar NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done')),
    owner text NULL,
    lease uuid NULL,
    lease_until timestamptz NULL,
    -- How many times the chunk was leased.
    leases integer NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, seq)
);
CREATE INDEX noodle_migrate_chunk_open_idx ON noodle_migrate_chunk (batch_id, seq) WHERE state <> 'done';

-- Each process working on a batch, as its heartbeats last said.
CREATE TABLE noodle_migrate_worker (
    batch_id uuid NOT NULL REFERENCES noodle_migrate_batch (id) ON DELETE CASCADE,
    id text NOT NULL,
    state varchar NOT NULL,
    active bigint NOT NULL DEFAULT 0,
    completed bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    bytes_moved bigint NOT NULL DEFAULT 0,
    files_per_second double precision NOT NULL DEFAULT 0,
    last_seen timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (batch_id, id)
);

-- All of the batch's chunks are written (workers may finish it).
ALTER TABLE noodle_migrate_batch ADD COLUMN chunked boolean NOT NULL DEFAULT false;
-- Where the batch's files go and come from (bucket, prefix, media
-- location): a worker configured for other places must not join it.
ALTER TABLE noodle_migrate_batch ADD COLUMN scope text NULL;
-- The log table the batch writes, chosen under the migration lock.
ALTER TABLE noodle_migrate_batch ADD COLUMN log_table varchar NULL;
