// Simon Willison's `llm` embeddings.db: collections(id, name, model) and embeddings
// (collection_id, id, embedding <f32 LE>, content, metadata, updated). Ids are unique per
// collection only, so the source id is "<collection>/<id>". No users: the collection is.
import { col, hasColumns, table } from './schema.js';
import type { LayoutDefinition } from './types.js';

export const llmLayout: LayoutDefinition = {
  name: 'llm',
  title: 'llm embeddings.db: collections + embeddings',
  detect: (schema) =>
    hasColumns(schema, 'collections', ['id', 'name', 'model']) &&
    hasColumns(schema, 'embeddings', ['collection_id', 'id', 'embedding', 'content', 'metadata']),
  plan(db, schema) {
    const e = table(schema, 'embeddings')!;
    const updated = col(e, 'updated') ? 'e.updated' : 'NULL';
    const models = db.prepare(`SELECT DISTINCT model FROM collections WHERE model IS NOT NULL`).pluck().all() as string[];
    return {
      layout: 'llm',
      relation:
        `SELECT e.rowid AS r, c.name || '/' || e.id AS id, NULL AS user_id, c.name AS collection, NULL AS partition, ` +
        `e.content AS content, e.embedding AS embedding, e.metadata AS metadata, ${updated} AS created_at, ${updated} AS updated_at ` +
        `FROM embeddings e JOIN collections c ON c.id = e.collection_id`,
      defaultUserFrom: { kind: 'collection' },
      userFromKinds: ['collection'],
      ...(models.length === 1 ? { sourceModel: { model: models[0]!, from: 'collections.model' } } : {}),
      notes:
        models.length > 1
          ? [`collections use ${models.length} models (${models.join(', ')}): pass --source-model for the vectors to reuse`]
          : [],
      noWriteBack: 'rollback writes only the EspressoBot memories layout; an llm embeddings.db is not written back',
    };
  },
};
