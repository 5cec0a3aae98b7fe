-- The Batch API's ledger (migrate --batch-api; src/embed/batch-api.ts, src/postgres/embedding-batches.ts).
-- One row per uploaded batch file, written after the upload and BEFORE the batch is created,
-- so a run killed at any point (or resumed days later on another machine against the same
-- database) knows every batch it may have paid for: it polls the batch it recorded, or finds
-- one created but not recorded by the tag in the batch's metadata, and never creates a second.
-- Beside embedding_cache, it outlives --force-recreate: what it records was paid for.
CREATE TABLE IF NOT EXISTS embedding_batches (
    id              BIGSERIAL PRIMARY KEY,
    job_tag         TEXT NOT NULL,                  -- metadata.memory_migrate_run: source, model, width, scope
    inputs_sha256   CHAR(64) NOT NULL,              -- metadata.inputs_sha256: sha256 of the JSONL file
    model           TEXT NOT NULL,
    dimensions      INTEGER NOT NULL,
    input_file_id   TEXT NOT NULL,
    batch_id        TEXT UNIQUE,                    -- NULL until the batch is created (or found)
    state           TEXT NOT NULL DEFAULT 'uploaded'
                    CHECK (state IN ('uploaded', 'submitted', 'done')),
    batch_status    TEXT,                           -- the API's status when last polled
    request_counts  JSONB,
    line_count      INTEGER NOT NULL,
    input_count     INTEGER NOT NULL,
    -- custom_id -> [[cache key, row id, user], ...] in input order: what each answer is for.
    lines           JSONB NOT NULL,
    -- cache key -> reason, for the inputs of failed lines (rejected at load, never resent).
    failed          JSONB NOT NULL DEFAULT '{}'::jsonb,
    resubmit_of     BIGINT REFERENCES embedding_batches (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS embedding_batches_job_idx ON embedding_batches (job_tag, state);
