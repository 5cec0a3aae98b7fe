-- The memory schema. {{dimensions}} is the vector width of the target embedding model,
-- filled in by the installer (the only substitution it makes). Every statement is
-- re-runnable. Vector indexes are NOT created here: they are built after the data is loaded
-- (src/postgres/indexes.ts), never on an empty table.
-- When memory-migrate adopts an app's own memories table, schema memory_migrate comes first on
-- the search path and already holds the view "memories" over the app's table (made by
-- src/postgres/adopted-table.ts), so CREATE TABLE memories below is skipped and every other
-- table is made in memory_migrate, beside the view.

CREATE TABLE IF NOT EXISTS memories (
    id                TEXT PRIMARY KEY,            -- the source id, kept as-is; an app's row gets its uuid as text
    uuid              UUID NOT NULL,               -- memory_migrate_uuid(id) for migrated rows (sql/002), random for an app's
    user_id           VARCHAR(255) NOT NULL,
    content           TEXT NOT NULL,               -- byte-identical to the source
    content_hash      CHAR(64) NOT NULL,           -- sha256 of the canonical content (sql/003)
    dedup_hash        CHAR(64) NOT NULL,           -- sha256 of the case-folded canonical content
    embedding         vector({{dimensions}}),
    embedding_model   TEXT,
    metadata          JSONB NOT NULL DEFAULT '{}'::jsonb,
    category          VARCHAR(100),
    importance_score  DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    access_count      INTEGER NOT NULL DEFAULT 0,
    -- TIMESTAMP as the seed documents it, holding UTC (statements written for it resolve)
    last_accessed_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    created_at        TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at        TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
-- id, uuid, user_id and the hashes have no column default: the trigger memories_fill_in
-- (sql/008) computes them when an INSERT leaves them out, so an app's plain INSERT works.

CREATE TABLE IF NOT EXISTS prompt_fragments (
    id            TEXT PRIMARY KEY,                -- source id, or 'default:<category>'; an app's row gets its uuid
    uuid          UUID NOT NULL,
    category      VARCHAR(100) NOT NULL,
    priority      INTEGER NOT NULL DEFAULT 5,
    content       TEXT NOT NULL,
    content_hash  CHAR(64) NOT NULL,
    tags          TEXT[] NOT NULL DEFAULT '{}',
    embedding     vector({{dimensions}}),
    embedding_model TEXT,
    agent_type    VARCHAR(100),                    -- NULL means all agents
    context_tier  VARCHAR(20) NOT NULL DEFAULT 'standard'
                  CHECK (context_tier IN ('core', 'standard', 'full')),
    is_active     BOOLEAN NOT NULL DEFAULT true,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at    TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

CREATE TABLE IF NOT EXISTS memory_duplicates (
    id                BIGSERIAL PRIMARY KEY,
    original_id       TEXT NOT NULL,                -- references memories(id) when memories is our table (below)
    duplicate_id      TEXT,                        -- source id of the row that was not stored (NULL: recorded by an app)
    user_id           VARCHAR(255),                -- filled from the original when an app leaves it out
    duplicate_hash    VARCHAR(64) NOT NULL,
    similarity_score  DOUBLE PRECISION NOT NULL,
    dedup_type        VARCHAR(20) NOT NULL
                      CHECK (dedup_type IN ('exact', 'fuzzy', 'key_phrase', 'semantic')),
    created_at        TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (duplicate_id, dedup_type)
);

CREATE TABLE IF NOT EXISTS memory_analytics (
    id                BIGSERIAL PRIMARY KEY,
    user_id           VARCHAR(255),
    query_text        TEXT,
    results_count     INTEGER,
    response_time_ms  INTEGER,
    context_tier      VARCHAR(20),
    created_at        TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- Persistent embedding cache: key = sha256(model | dimensions | canonical text). The vector
-- column has no fixed width so one cache serves every model.
CREATE TABLE IF NOT EXISTS embedding_cache (
    key         CHAR(64) PRIMARY KEY,
    model       TEXT NOT NULL,
    dimensions  INTEGER NOT NULL,
    embedding   vector NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The migration ledger: one row per run.
CREATE TABLE IF NOT EXISTS migration_runs (
    id               BIGSERIAL PRIMARY KEY,
    source_path      TEXT NOT NULL,
    source_sha256    CHAR(64) NOT NULL,
    options          JSONB NOT NULL,               -- secrets removed
    shard            TEXT,
    status           VARCHAR(20) NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'committed', 'failed', 'interrupted')),
    counts           JSONB NOT NULL DEFAULT '{}'::jsonb,
    checkpoint_rowid BIGINT,
    error            TEXT,
    hmac             CHAR(64),
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);

-- Rows the pipeline read but did not store, with the reason (verify counts them).
CREATE TABLE IF NOT EXISTS migration_skips (
    source_id   TEXT PRIMARY KEY,
    user_id     TEXT,                             -- as in the source: a rejected one may be too long for memories
    reason      TEXT NOT NULL,
    rejected    BOOLEAN NOT NULL DEFAULT false,   -- PostgreSQL cannot store the row (verify names it)
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A duplicate record goes with its original. Only where memories is our own table: an
-- adopted app's table is behind a view, and its ids are the app's.
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('memories')) = 'r'
       AND NOT EXISTS (SELECT 1 FROM pg_constraint
                        WHERE conrelid = to_regclass('memory_duplicates') AND contype = 'f') THEN
        ALTER TABLE memory_duplicates ADD CONSTRAINT memory_duplicates_original_id_fkey
            FOREIGN KEY (original_id) REFERENCES memories(id) ON DELETE CASCADE;
    END IF;
END
$$;
