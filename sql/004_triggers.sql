-- updated_at maintenance. A writer that sets updated_at itself (the migration copies the
-- source's timestamp) keeps its value; any other update gets now().
CREATE OR REPLACE FUNCTION memory_migrate_touch_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
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
