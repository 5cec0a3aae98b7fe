-- pgvector. The installer catches a missing extension or a permission error and names the
-- remedy; see src/target/schema.ts.
CREATE EXTENSION IF NOT EXISTS vector;
