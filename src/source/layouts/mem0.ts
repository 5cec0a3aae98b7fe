// mem0 TypeScript OSS vector_store.db: vectors(id, vector f32 LE, payload JSON). The text is
// payload.data, the user payload.user_id (or userId), the payload is the metadata as stored.
import type { LayoutDefinition } from './types.js';
import { hasColumns } from './schema.js';

export const mem0Layout: LayoutDefinition = {
  name: 'mem0',
  title: 'mem0 (TypeScript) vector_store.db: vectors(id, vector, payload)',
  detect: (schema) => hasColumns(schema, 'vectors', ['id', 'vector', 'payload']),
  plan() {
    const p = (k: string): string => `json_extract(v.payload, '$.${k}')`;
    return {
      layout: 'mem0',
      relation:
        `SELECT v.rowid AS r, CAST(v.id AS TEXT) AS id, CAST(COALESCE(${p('user_id')}, ${p('userId')}) AS TEXT) AS user_id, ` +
        `'vectors' AS collection, NULL AS partition, ${p('data')} AS content, v.vector AS embedding, v.payload AS metadata, ` +
        `COALESCE(${p('createdAt')}, ${p('created_at')}) AS created_at, COALESCE(${p('updatedAt')}, ${p('updated_at')}) AS updated_at ` +
        `FROM vectors v WHERE json_valid(v.payload)`,
      defaultUserFrom: { kind: 'column' },
      userFromKinds: ['column', 'collection'],
      notes: [],
      noWriteBack: 'rollback writes only the EspressoBot memories layout; a mem0 vector_store.db is not written back',
    };
  },
};
