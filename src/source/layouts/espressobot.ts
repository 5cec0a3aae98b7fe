// EspressoBot / better-sqlite3 (Layout A of source-formats.md): a `memories` table with id,
// user_id and content. The reader keeps reading it straight from the table (layout.ts), as it
// always has; this entry only lets detection and --layout name it.
import type { LayoutDefinition } from './types.js';
import { hasColumns } from './schema.js';

export const ESPRESSOBOT = 'espressobot';

export const espressobotLayout: LayoutDefinition = {
  name: ESPRESSOBOT,
  title: 'EspressoBot memories(id, user_id, content, embedding, metadata|meta_data)',
  detect: (schema) => hasColumns(schema, 'memories', ['id', 'user_id', 'content']),
  plan() {
    // Read by the reader's table path (layout.ts); never planned as a relation.
    throw new Error('the EspressoBot layout is read from its table directly');
  },
};
