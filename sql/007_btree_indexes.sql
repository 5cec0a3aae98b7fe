-- scope: installed (not run when memory-migrate adopts an app's own memories table)
-- Btree indexes from the seed. Cheap on an empty table, so they are created up front.
CREATE INDEX IF NOT EXISTS memories_user_idx ON memories (user_id);
CREATE UNIQUE INDEX IF NOT EXISTS memories_uuid_key ON memories (uuid);
CREATE INDEX IF NOT EXISTS memories_dedup_idx ON memories (user_id, dedup_hash);
CREATE INDEX IF NOT EXISTS memories_category_idx ON memories (category);
CREATE INDEX IF NOT EXISTS memories_importance_idx ON memories (importance_score DESC);
CREATE INDEX IF NOT EXISTS memories_access_idx ON memories (last_accessed_at DESC);
CREATE INDEX IF NOT EXISTS prompt_fragments_category_idx ON prompt_fragments (category);
CREATE INDEX IF NOT EXISTS prompt_fragments_agent_idx ON prompt_fragments (agent_type);
CREATE INDEX IF NOT EXISTS prompt_fragments_tier_idx ON prompt_fragments (context_tier);
CREATE INDEX IF NOT EXISTS prompt_fragments_priority_idx ON prompt_fragments (priority DESC);
CREATE INDEX IF NOT EXISTS memory_analytics_user_idx ON memory_analytics (user_id);
CREATE INDEX IF NOT EXISTS memory_analytics_time_idx ON memory_analytics (created_at);
CREATE INDEX IF NOT EXISTS memory_duplicates_hash_idx ON memory_duplicates (duplicate_hash);
CREATE INDEX IF NOT EXISTS memory_duplicates_original_idx ON memory_duplicates (original_id);
CREATE UNIQUE INDEX IF NOT EXISTS prompt_fragments_uuid_key ON prompt_fragments (uuid);
