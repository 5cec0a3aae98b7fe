-- scope: installed (not run when memory-migrate adopts an app's own memories table)
-- updated_at maintenance. A writer that sets updated_at itself (the migration copies the
-- source's timestamp) keeps its value; any other change of content or metadata gets now()
-- (as UTC wall time, like every TIMESTAMP column here). Access bookkeeping (access_count,
-- last_accessed_at) is not a change of the memory.
CREATE OR REPLACE FUNCTION memory_migrate_touch_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
       AND (NEW.content IS DISTINCT FROM OLD.content OR NEW.metadata IS DISTINCT FROM OLD.metadata) THEN
        NEW.updated_at := now() AT TIME ZONE 'UTC';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE TRIGGER memories_touch_updated_at
    BEFORE UPDATE ON memories
    FOR EACH ROW EXECUTE FUNCTION memory_migrate_touch_updated_at();

CREATE OR REPLACE TRIGGER prompt_fragments_touch_updated_at
    BEFORE UPDATE ON prompt_fragments
    FOR EACH ROW EXECUTE FUNCTION memory_migrate_touch_updated_at();

-- What an app's plain INSERT leaves out, and what its UPDATE of content makes stale.
-- On INSERT: uuid (derived from the id when one is given, else random), id (the uuid as
-- text), user_id (from metadata.user_id, which LangChain's PGVectorStore can send, else
-- 'default'), category (from metadata.category, as the migration does), the hashes.
-- On UPDATE of content: the hashes, unless the writer set them itself (the migration
-- does). The WHEN clauses keep the bulk load, which sends every column, from
-- calling the function at all.
CREATE OR REPLACE FUNCTION memory_migrate_fill_in() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.uuid IS NULL THEN
            NEW.uuid := CASE WHEN NEW.id IS NULL THEN gen_random_uuid() ELSE memory_migrate_uuid(NEW.id) END;
        END IF;
        NEW.id := COALESCE(NEW.id, NEW.uuid::text);
        NEW.content_hash := COALESCE(NEW.content_hash, memory_migrate_content_hash(NEW.content));
        IF TG_TABLE_NAME = 'memories' THEN
            NEW.user_id := COALESCE(NEW.user_id, NEW.metadata->>'user_id', 'default');
            NEW.category := COALESCE(NEW.category, left(NEW.metadata->>'category', 100));
            NEW.dedup_hash := COALESCE(NEW.dedup_hash, memory_migrate_dedup_hash(NEW.content));
        END IF;
    ELSE
        IF NEW.content_hash IS NOT DISTINCT FROM OLD.content_hash THEN
            NEW.content_hash := memory_migrate_content_hash(NEW.content);
        END IF;
        -- Nested, not AND: prompt_fragments has no dedup_hash for the expression to name.
        IF TG_TABLE_NAME = 'memories' THEN
            IF NEW.dedup_hash IS NOT DISTINCT FROM OLD.dedup_hash THEN
                NEW.dedup_hash := memory_migrate_dedup_hash(NEW.content);
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE TRIGGER memories_fill_in
    BEFORE INSERT ON memories
    FOR EACH ROW
    WHEN (NEW.id IS NULL OR NEW.uuid IS NULL OR NEW.user_id IS NULL OR NEW.content_hash IS NULL OR NEW.dedup_hash IS NULL)
    EXECUTE FUNCTION memory_migrate_fill_in();

CREATE OR REPLACE TRIGGER memories_rehash
    BEFORE UPDATE OF content ON memories
    FOR EACH ROW WHEN (NEW.content IS DISTINCT FROM OLD.content)
    EXECUTE FUNCTION memory_migrate_fill_in();

CREATE OR REPLACE TRIGGER prompt_fragments_fill_in
    BEFORE INSERT ON prompt_fragments
    FOR EACH ROW WHEN (NEW.id IS NULL OR NEW.uuid IS NULL OR NEW.content_hash IS NULL)
    EXECUTE FUNCTION memory_migrate_fill_in();

CREATE OR REPLACE TRIGGER prompt_fragments_rehash
    BEFORE UPDATE OF content ON prompt_fragments
    FOR EACH ROW WHEN (NEW.content IS DISTINCT FROM OLD.content)
    EXECUTE FUNCTION memory_migrate_fill_in();

-- memory_duplicates: the documented four-column INSERT (original_id, duplicate_hash,
-- similarity_score, dedup_type) gets user_id from the original memory.
CREATE OR REPLACE FUNCTION memory_migrate_duplicate_user() RETURNS trigger AS $$
BEGIN
    NEW.user_id := (SELECT m.user_id FROM memories m WHERE m.id = NEW.original_id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE TRIGGER memory_duplicates_user
    BEFORE INSERT ON memory_duplicates
    FOR EACH ROW WHEN (NEW.user_id IS NULL)
    EXECUTE FUNCTION memory_migrate_duplicate_user();
