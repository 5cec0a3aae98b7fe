// What every source layout tells the reader: how to recognise itself in sqlite_master, and one
// SQL relation that gives each memory as the same columns, so the reader, verify and the
// pipeline treat every layout alike.
import type { SqliteDb } from '../sqlite-file.js';
import type { DecodedEmbedding } from '../types.js';

/** A table or view of the file, as sqlite_master and PRAGMA table_info describe it. */
export interface TableShape {
  name: string;
  type: 'table' | 'view';
  /** CREATE statement (virtual tables carry their module arguments here). */
  sql: string;
  /** Column names in declaration order (a virtual table's may be empty). */
  columns: string[];
  /** Declared type per column, upper case, by lower-case column name. */
  types: Map<string, string>;
}

/** The file's schema, by lower-case table name. */
export type Schema = Map<string, TableShape>;

/**
 * What becomes user_id: the layout's own user column (`column`), the collection (table,
 * collection, namespace or agent), a sqlite-vec partition key, a key of the metadata JSON, or
 * a constant.
 */
export type UserFrom =
  | { kind: 'column' }
  | { kind: 'collection' }
  | { kind: 'partition' }
  | { kind: 'metadata'; key: string }
  | { kind: 'const'; value: string };

/**
 * The columns of a layout's relation, in this order and with these names:
 * r (integer, unique, increasing: the order of the file and the checkpoint),
 * id (text, unique in the file), user_id (the layout's own user, may be NULL),
 * collection, partition (NULL when the layout has none), content, embedding, metadata
 * (JSON text or NULL), created_at, updated_at.
 */
export const RELATION_COLUMNS = ['r', 'id', 'user_id', 'collection', 'partition', 'content', 'embedding', 'metadata', 'created_at', 'updated_at'] as const;

export interface LayoutPlan {
  /** The layout's name, as --layout takes it. */
  layout: string;
  /** SELECT giving RELATION_COLUMNS (see above). */
  relation: string;
  /** What becomes user_id when --user-from is not given. */
  defaultUserFrom: UserFrom;
  /** The --user-from kinds this layout can honour (metadata and const always can). */
  userFromKinds: UserFrom['kind'][];
  /** The model that made the stored vectors, when the file records it, and where it came from. */
  sourceModel?: { model: string; from: string };
  /** Lines the migration prints about this file (e.g. vectors that must be recomputed). */
  notes: string[];
  /** Decodes a stored embedding value when the layout knows its encoding (default: sniffed per row). */
  decode?: (value: unknown) => DecodedEmbedding;
  /** Why rollback cannot write this layout back (undefined: it can). */
  noWriteBack?: string;
}

export interface LayoutDefinition {
  name: string;
  /** One line for the README table and error messages. */
  title: string;
  /** True when the file's schema is this layout. */
  detect(schema: Schema): boolean;
  /** The relation to read, for a file detect() accepted (or --layout forced). */
  plan(db: SqliteDb, schema: Schema, path: string): LayoutPlan;
}
