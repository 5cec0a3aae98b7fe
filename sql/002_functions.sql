-- The row UUID. Every memory and fragment has a TEXT id (the source id, kept as-is, so a
-- re-run and rollback can match rows back) and a UUID, which UUID-keyed clients use: LangChain's
-- PGVectorStore (idColumnName 'uuid') and the memory-plugin v1 API. A migrated row's UUID is
-- derived from its id, so every run and every tool computes the same one (src/postgres/row-uuid.ts
-- computes it in JavaScript for the bulk load: the two must agree). It is an RFC 9562 version 8
-- UUID made of the first 16 bytes of sha256('memory-migrate:' || id); rows an app inserts get a
-- random version 4 UUID, so the two kinds can never clash.
CREATE OR REPLACE FUNCTION memory_migrate_uuid(id text) RETURNS uuid AS $$
    SELECT encode(
        set_byte(set_byte(b, 6, (get_byte(b, 6) & 15) | 128), 8, (get_byte(b, 8) & 63) | 128),
        'hex')::uuid
      FROM (SELECT substring(sha256(convert_to('memory-migrate:' || id, 'UTF8')) FROM 1 FOR 16) AS b) AS h
$$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE;
