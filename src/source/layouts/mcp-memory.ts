// mcp-memory-service (doobidoo): memories(id, content_hash, content, tags, metadata,
// created_at, updated_at, deleted_at) with the vectors in the vec0 table memory_embeddings
// (rowid = memories.id), read from its shadow tables. Soft-deleted rows are not read. No
// users: the collection is "memories".
import type { LayoutDefinition } from './types.js';
import { hasColumns, table } from './schema.js';
import { parseVec0, vec0Select } from './vec0.js';

export const mcpMemoryLayout: LayoutDefinition = {
  name: 'mcp-memory-service',
  title: 'mcp-memory-service: memories + vec0 memory_embeddings',
  detect: (schema) =>
    hasColumns(schema, 'memories', ['id', 'content_hash', 'content']) && /USING\s+vec0/i.test(table(schema, 'memory_embeddings')?.sql ?? ''),
  plan(_db, schema) {
    const m = table(schema, 'memories')!;
    const v = vec0Select(schema, parseVec0(table(schema, 'memory_embeddings')!));
    const live = m.types.has('deleted_at') ? ' WHERE m.deleted_at IS NULL' : '';
    return {
      layout: 'mcp-memory-service',
      relation:
        `SELECT m.rowid AS r, CAST(m.id AS TEXT) AS id, NULL AS user_id, 'memories' AS collection, NULL AS partition, m.content AS content, ` +
        `(SELECT ${v.vector} FROM ${v.from} WHERE ${v.rowid} = m.id) AS embedding, ` +
        `${m.types.has('metadata') ? 'm.metadata' : 'NULL'} AS metadata, ${m.types.has('created_at') ? 'm.created_at' : 'NULL'} AS created_at, ` +
        `${m.types.has('updated_at') ? 'm.updated_at' : 'NULL'} AS updated_at FROM memories m${live}`,
      defaultUserFrom: { kind: 'collection' },
      userFromKinds: ['collection'],
      notes: v.vectorProblem ? [v.vectorProblem] : [],
      noWriteBack: 'rollback writes only the EspressoBot memories layout; an mcp-memory-service file is not written back',
    };
  },
};
