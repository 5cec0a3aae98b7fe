-- scope: installed (an adopted app's table gets its own, from src/postgres/adopted-table.ts)
-- What the pipeline and verify look up about stored memories once per batch: the rows with
-- these ids, and the first stored row of each (user, dedup hash). Functions, so that the same
-- statements run on an adopted app's table, where memories is a view over a join the planner
-- cannot search by id. Here they read memories itself, inlined, by its indexes.
CREATE OR REPLACE FUNCTION memory_keys(ids text[])
RETURNS TABLE (id text, user_id varchar, content_hash char(64), dedup_hash char(64), metadata jsonb,
               created_at timestamp, updated_at timestamp)
LANGUAGE sql STABLE AS $$
    SELECT m.id, m.user_id, m.content_hash, m.dedup_hash, m.metadata, m.created_at, m.updated_at
      FROM memories m WHERE m.id = ANY (ids)
$$;

-- dedup_hash is char(64): the keys are compared as bpchar, or memories_dedup_idx is ruled out
-- and every batch scans the table.
CREATE OR REPLACE FUNCTION memory_dedup_owners(users text[], hashes text[])
RETURNS TABLE (id text, user_id varchar, dedup_hash char(64))
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT ON (m.user_id, m.dedup_hash) m.id, m.user_id, m.dedup_hash
      FROM memories m JOIN (SELECT DISTINCT u, h FROM unnest(users, hashes) AS x(u, h)) x
        ON m.user_id = x.u AND m.dedup_hash = x.h::bpchar
     ORDER BY m.user_id, m.dedup_hash, m.created_at, m.id
$$;

-- The stored memories after `after`, in id order, a page at a time (verify's walk for rows
-- the SQLite file does not have).
CREATE OR REPLACE FUNCTION memory_page(after text, n integer)
RETURNS TABLE (id text, uuid uuid, user_id varchar, created_at timestamp)
LANGUAGE sql STABLE AS $$
    SELECT m.id, m.uuid, m.user_id, m.created_at FROM memories m WHERE m.id > after ORDER BY m.id LIMIT n
$$;
