-- scope: installed (not run when memory-migrate adopts an app's own memories table)
-- Brings tables made by an older memory-migrate to the shape of sql/005, in place. Runs on
-- every install and does nothing once a table is current. What it changes, once:
-- - memories and prompt_fragments gain the row UUID (derived from the id, as for a new load);
-- - the timestamps the seed documents as TIMESTAMP become TIMESTAMP holding UTC (they were
--   TIMESTAMPTZ; the instant is kept to the microsecond);
-- - last_accessed_at is never NULL: a migrated row's is its updated_at;
-- - dedup_hash is recomputed where the case folding changed (final sigma, sql/003);
-- - memory_duplicates accepts an app's four-column INSERT (duplicate_id, user_id optional);
-- - migration_skips records whether a row was rejected.
-- Nothing is dropped, and no source id changes.
DO $$
DECLARE
    schema_name text := current_schema();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = schema_name AND table_name = 'memories' AND column_name = 'uuid') THEN
        ALTER TABLE memories
            ADD COLUMN uuid UUID,
            ALTER COLUMN last_accessed_at TYPE TIMESTAMP USING last_accessed_at AT TIME ZONE 'UTC',
            ALTER COLUMN created_at TYPE TIMESTAMP USING created_at AT TIME ZONE 'UTC',
            ALTER COLUMN updated_at TYPE TIMESTAMP USING updated_at AT TIME ZONE 'UTC';
        UPDATE memories
           SET uuid = memory_migrate_uuid(id),
               last_accessed_at = COALESCE(last_accessed_at, updated_at),
               dedup_hash = CASE WHEN content ~ '[Σς]' THEN memory_migrate_dedup_hash(content) ELSE dedup_hash END;
        ALTER TABLE memories
            ALTER COLUMN uuid SET NOT NULL,
            ALTER COLUMN last_accessed_at SET NOT NULL,
            ALTER COLUMN last_accessed_at SET DEFAULT (now() AT TIME ZONE 'UTC'),
            ALTER COLUMN created_at SET DEFAULT (now() AT TIME ZONE 'UTC'),
            ALTER COLUMN updated_at SET DEFAULT (now() AT TIME ZONE 'UTC');
    END IF;

    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = schema_name AND table_name = 'prompt_fragments' AND column_name = 'uuid') THEN
        ALTER TABLE prompt_fragments
            ADD COLUMN uuid UUID,
            ALTER COLUMN created_at TYPE TIMESTAMP USING created_at AT TIME ZONE 'UTC',
            ALTER COLUMN updated_at TYPE TIMESTAMP USING updated_at AT TIME ZONE 'UTC';
        UPDATE prompt_fragments SET uuid = memory_migrate_uuid(id);
        ALTER TABLE prompt_fragments
            ALTER COLUMN uuid SET NOT NULL,
            ALTER COLUMN created_at SET DEFAULT (now() AT TIME ZONE 'UTC'),
            ALTER COLUMN updated_at SET DEFAULT (now() AT TIME ZONE 'UTC');
    END IF;

    IF EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = schema_name AND table_name = 'memory_duplicates'
                  AND column_name = 'created_at' AND data_type = 'timestamp with time zone') THEN
        ALTER TABLE memory_duplicates
            ALTER COLUMN duplicate_id DROP NOT NULL,
            ALTER COLUMN user_id DROP NOT NULL,
            ALTER COLUMN created_at TYPE TIMESTAMP USING created_at AT TIME ZONE 'UTC',
            ALTER COLUMN created_at SET DEFAULT (now() AT TIME ZONE 'UTC');
    END IF;

    IF EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = schema_name AND table_name = 'memory_analytics'
                  AND column_name = 'created_at' AND data_type = 'timestamp with time zone') THEN
        ALTER TABLE memory_analytics
            ALTER COLUMN created_at TYPE TIMESTAMP USING created_at AT TIME ZONE 'UTC',
            ALTER COLUMN created_at SET DEFAULT (now() AT TIME ZONE 'UTC');
    END IF;
END
$$;

ALTER TABLE migration_skips ADD COLUMN IF NOT EXISTS rejected BOOLEAN NOT NULL DEFAULT false;
-- A rejected row's user may be longer than memories.user_id allows (varchar to text: no rewrite).
ALTER TABLE migration_skips ALTER COLUMN user_id TYPE TEXT;
