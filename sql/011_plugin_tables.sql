-- What `memory-migrate serve` (src/plugin-server/) needs beyond the memories themselves, to
-- serve them over the memory-plugin v1 HTTP contract. Additive only, and the same in both
-- modes: these are side tables keyed by memories.id, never columns of memories, because in
-- adopted mode memories is a view over the app's own table, which must not gain a column.
-- In adopted mode they are made in schema memory_migrate (first on our search path).
--
-- A migrated memory has no row here: its namespace comes from its user_id through the
-- namespace template, its wire id is its uuid column, and it is a 'fact' from the 'agent',
-- not pinned and never expiring. A memory written or rewritten over HTTP has a row here with
-- the plugin's fields. The full-text index is not made here: serve builds it on the table
-- that really holds the content (ours, or the app's) when it starts (plugin-server/schema.ts),
-- so a migration that never serves pays nothing for it.

-- Namespaces made by PUT (or by PATCH of a namespace that only existed through its users'
-- migrated memories).
CREATE TABLE IF NOT EXISTS plugin_namespaces (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('workspace', 'team', 'org', 'custom')),
    expires_at  TIMESTAMPTZ,
    metadata    JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The plugin's fields of a memory written over HTTP. No foreign key to memories: in adopted
-- mode it is a view. A row whose memory the app deleted is never read (every read joins
-- memories) and is removed when its wire id is written again.
CREATE TABLE IF NOT EXISTS plugin_memories (
    memory_id    TEXT PRIMARY KEY,              -- memories.id
    wire_id      UUID NOT NULL UNIQUE,          -- the id on the wire (memories.uuid where memories is our table)
    namespace    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('fact', 'summary', 'checkpoint')),
    source       TEXT NOT NULL CHECK (source IN ('agent', 'runtime', 'user')),
    pinned       BOOLEAN NOT NULL DEFAULT false,
    expires_at   TIMESTAMPTZ,
    propagation  JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS plugin_memories_namespace_idx ON plugin_memories (namespace);
CREATE INDEX IF NOT EXISTS plugin_memories_expires_idx ON plugin_memories (expires_at) WHERE expires_at IS NOT NULL;
