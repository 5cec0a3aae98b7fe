// Which layout a file is: every known layout looks at sqlite_master, the specific ones first;
// the generic sqlite-vec reader only when none of them claims the file. --layout forces one,
// --map describes any other table. Layouts memory-migrate cannot read are refused here with
// what to do instead.
import { UsageError } from '../../errors.js';
import type { SqliteDb } from '../sqlite-file.js';
import { chromaLayout } from './chroma.js';
import { ESPRESSOBOT, espressobotLayout } from './espressobot.js';
import { langchainLibsqlLayout, langchainSqliteVecLayout, langchainSqliteVssLayout } from './langchain.js';
import { langgraphLayout } from './langgraph.js';
import { lettaLayout } from './letta.js';
import { llmLayout } from './llm.js';
import { mcpMemoryLayout } from './mcp-memory.js';
import { mem0Layout } from './mem0.js';
import { hasColumns } from './schema.js';
import { sqliteVecLayout } from './sqlite-vec.js';
import type { LayoutDefinition, Schema, UserFrom } from './types.js';

export { ESPRESSOBOT } from './espressobot.js';
export { readSchema } from './schema.js';
export { loadColumnMap, planColumnMap, MAP_ENCODINGS, type ColumnMap, type MapEncoding } from './map.js';
export type { LayoutPlan, Schema, UserFrom } from './types.js';

/** Every layout, in detection order: the specific ones, then the generic sqlite-vec reader. */
export const LAYOUTS: LayoutDefinition[] = [
  espressobotLayout,
  llmLayout,
  chromaLayout,
  mcpMemoryLayout,
  lettaLayout,
  langgraphLayout,
  mem0Layout,
  langchainSqliteVecLayout,
  langchainSqliteVssLayout,
  langchainLibsqlLayout,
  sqliteVecLayout,
];
const GENERIC = new Set([sqliteVecLayout.name]);

export const LAYOUT_NAMES = LAYOUTS.map((l) => l.name);

/** The layout named by --layout ("memories" is the EspressoBot layout's old name). */
export function layoutByName(name: string): LayoutDefinition {
  const wanted = name === 'memories' ? ESPRESSOBOT : name;
  const found = LAYOUTS.find((l) => l.name === wanted);
  if (!found) throw new UsageError(`unknown --layout "${name}"; the layouts are ${LAYOUT_NAMES.join(', ')} (or describe the table with --map FILE)`);
  return found;
}

/** Files this tool does not read, recognised by their tables: the line that says what to do. */
export function refuseUnreadableSchema(schema: Schema, path: string): void {
  if (hasColumns(schema, 'points', ['id', 'point'])) {
    throw new UsageError(
      `${path} is qdrant-client's local storage (mem0's default vector store): its points are pickled Python objects memory-migrate cannot read; ` +
        `export them with Python (client.scroll(..., with_vectors=True)) into a SQLite table and migrate that with --map, or re-add the memories through mem0 with a SQLite or Chroma store`,
    );
  }
}

/**
 * The layout of the file: --layout when given, else the one layout that detects it. Null when
 * the file has no tables at all (the "exists but is empty" case).
 */
export function detectFileLayout(schema: Schema, path: string, forced?: string): LayoutDefinition | null {
  if (forced !== undefined) {
    const def = layoutByName(forced);
    if (def.name !== ESPRESSOBOT && !def.detect(schema)) {
      throw new UsageError(
        `${path} does not have the tables of layout ${def.name} (tables found: ${[...schema.values()].map((t) => t.name).join(', ') || 'none'}); ` +
          `drop --layout to detect it, or describe the table with --map FILE`,
      );
    }
    return def;
  }
  refuseUnreadableSchema(schema, path);
  const matches = LAYOUTS.filter((l) => l.detect(schema));
  const specific = matches.filter((l) => !GENERIC.has(l.name));
  if (specific.length > 1) {
    throw new UsageError(
      `${path} matches several layouts (${specific.map((l) => l.name).join(', ')}); choose one with --layout NAME`,
    );
  }
  if (specific.length === 1) return specific[0]!;
  if (matches.length === 1) return matches[0]!;
  if (schema.size === 0) return null;
  // A memories table without the columns: the EspressoBot reader says which one is missing.
  if (schema.has('memories')) return espressobotLayout;
  const tables = [...schema.values()].map((t) => t.name);
  throw new UsageError(
    `${path} is not a memory layout memory-migrate knows (tables found: ${tables.join(', ')}); ` +
      `describe its table with --map FILE (see MIGRATION.md), or force one of ${LAYOUT_NAMES.join(', ')} with --layout`,
  );
}

/** Parses --user-from: collection | partition | column | metadata:<key> | const:<value>. */
export function parseUserFrom(value: string): UserFrom {
  if (value === 'collection' || value === 'partition' || value === 'column') return { kind: value };
  const m = /^(metadata|const):(.+)$/s.exec(value);
  if (m) return m[1] === 'metadata' ? { kind: 'metadata', key: m[2]! } : { kind: 'const', value: m[2]! };
  throw new UsageError(`invalid --user-from "${value}"; use collection, partition, column, metadata:<key> or const:<value>`);
}

/** --user-from as text, the way the ledger records it. */
export function userFromText(u: UserFrom): string {
  return u.kind === 'metadata' ? `metadata:${u.key}` : u.kind === 'const' ? `const:${u.value}` : u.kind;
}
