-- updated_at maintenance. A writer that sets updated_at itself (the migration copies the
-- source's timestamp) keeps its value; any other change of content or metadata gets now().
-- Access bookkeeping (access_count, last_accessed_at) is not a change of the memory.
CREATE OR REPLACE FUNCTION memory_migrate_touch_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
       AND (NEW.content IS DISTINCT FROM OLD.content OR NEW.metadata IS DISTINCT FROM OLD.metadata) THEN
        NEW.updated_at := now();
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
