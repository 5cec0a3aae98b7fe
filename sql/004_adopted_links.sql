-- scope: adopted (run only when memory-migrate writes into an app's own memories table)
-- The record of what memory-migrate wrote into the app's table, like a record manager: one
-- row per source row, from its source id to the id the app's table gave it, with the hashes
-- and the values the app's table has no column for. The app's table gains nothing.
CREATE TABLE IF NOT EXISTS memory_links (
    source_id         TEXT PRIMARY KEY,            -- the id in the SQLite file
    target_id         TEXT NOT NULL UNIQUE,        -- the app's id for the row, as text (SERIAL, UUID, TEXT...)
    content_hash      CHAR(64) NOT NULL,           -- of the content as loaded (sql/003)
    dedup_hash        CHAR(64) NOT NULL,
    content_md5       CHAR(32) NOT NULL,           -- md5(content) as loaded: a changed row is rehashed, never trusted
    user_id           VARCHAR(255),                -- kept here only when the app's table has no such column
    embedding_model   TEXT,
    metadata          JSONB,
    category          VARCHAR(100),
    importance_score  DOUBLE PRECISION,
    created_at        TIMESTAMP,
    updated_at        TIMESTAMP,
    last_accessed_at  TIMESTAMP,
    linked_at         TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX IF NOT EXISTS memory_links_dedup_idx ON memory_links (dedup_hash);
