// Chroma chroma.sqlite3 (0.4 – 1.x): rows are the METADATA segment's `embeddings`; the text is
// the `chroma:document` metadata row, the other metadata rows (typed key/value) become the
// metadata object. Vectors: the latest FLOAT32 vector of the row's id in `embeddings_queue`,
// when the queue still holds it. Once Chroma has purged the queue into its HNSW segment files,
// the label → id map of those files is a Python pickle (index_metadata.pickle), which
// memory-migrate does not decode: such rows are read without a vector and are embedded again.
import { existsSync } from 'node:fs';
import type { LayoutDefinition } from './types.js';
import { hasColumns, table } from './schema.js';

const VALUE =
  `CASE WHEN m.string_value IS NOT NULL THEN m.string_value WHEN m.int_value IS NOT NULL THEN m.int_value ` +
  `WHEN m.float_value IS NOT NULL THEN m.float_value WHEN m.bool_value IS NOT NULL THEN json(CASE m.bool_value WHEN 0 THEN 'false' ELSE 'true' END) END`;

export const chromaLayout: LayoutDefinition = {
  name: 'chroma',
  title: 'Chroma chroma.sqlite3: embeddings + embedding_metadata (+ embeddings_queue)',
  detect: (schema) =>
    hasColumns(schema, 'embeddings', ['id', 'segment_id', 'embedding_id', 'seq_id']) &&
    hasColumns(schema, 'embedding_metadata', ['id', 'key', 'string_value']) &&
    hasColumns(schema, 'segments', ['id', 'scope', 'collection']) &&
    hasColumns(schema, 'collections', ['id', 'name']),
  plan(db, schema, path) {
    const queue = table(schema, 'embeddings_queue') !== undefined;
    const vector = queue
      ? `(SELECT q.vector FROM embeddings_queue q WHERE q.topic = 'persistent://default/default/' || c.id AND q.id = e.embedding_id ` +
        `AND q.operation IN (0, 1, 2) AND q.vector IS NOT NULL AND COALESCE(q.encoding, 'FLOAT32') = 'FLOAT32' ORDER BY q.seq_id DESC LIMIT 1)`
      : 'NULL';
    const relation =
      `SELECT e.id AS r, c.name || '/' || e.embedding_id AS id, NULL AS user_id, c.name AS collection, NULL AS partition, ` +
      `(SELECT m.string_value FROM embedding_metadata m WHERE m.id = e.id AND m.key = 'chroma:document') AS content, ${vector} AS embedding, ` +
      `(SELECT json_group_object(m.key, ${VALUE}) FROM embedding_metadata m WHERE m.id = e.id AND m.key <> 'chroma:document') AS metadata, ` +
      `e.created_at AS created_at, e.created_at AS updated_at ` +
      `FROM embeddings e JOIN segments s ON s.id = e.segment_id AND s.scope = 'METADATA' JOIN collections c ON c.id = s.collection`;
    const counts = db.prepare(`SELECT COUNT(*) AS total, COUNT(embedding) AS withVector FROM (${relation})`).get() as { total: number; withVector: number };
    const missing = Number(counts.total) - Number(counts.withVector);
    const notes: string[] = [];
    if (missing > 0) {
      const dir = path.replace(/[^/\\]*$/, '');
      const segments = (db.prepare(`SELECT id FROM segments WHERE scope = 'VECTOR'`).pluck().all() as string[]).filter((id) => existsSync(`${dir}${id}`));
      notes.push(
        `chroma: ${missing} of ${counts.total} vectors are no longer in chroma.sqlite3 (Chroma moved them into its HNSW index` +
          `${segments.length ? `, ${segments.length} segment director${segments.length === 1 ? 'y' : 'ies'} next to the file` : ''}, whose id map is a Python pickle): ` +
          `they must be recomputed from the text; --dry-run shows the cost`,
      );
    }
    return {
      layout: 'chroma',
      relation,
      defaultUserFrom: { kind: 'collection' },
      userFromKinds: ['collection'],
      notes,
      noWriteBack: 'rollback writes only the EspressoBot memories layout; Chroma files are written by Chroma only',
    };
  },
};
