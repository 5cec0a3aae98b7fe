// The file's tables and their columns, read once from sqlite_master: every layout's detection
// looks only at this.
import { quoteIdent } from '../../sql-identifier.js';
import type { SqliteDb } from '../sqlite-file.js';
import type { Schema, TableShape } from './types.js';

export function readSchema(db: SqliteDb): Schema {
  const rows = db
    .prepare(`SELECT name, type, COALESCE(sql, '') AS sql FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name`)
    .all() as { name: string; type: 'table' | 'view'; sql: string }[];
  const schema: Schema = new Map();
  for (const r of rows) {
    let cols: { name: string; type: string }[] = [];
    // A virtual table whose module is not loaded cannot be described; its DDL still can.
    if (!/\bVIRTUAL\s+TABLE\b/i.test(r.sql)) {
      try {
        cols = db.prepare(`PRAGMA table_info(${quoteIdent(r.name)})`).all() as { name: string; type: string }[];
      } catch {
        cols = [];
      }
    }
    const shape: TableShape = {
      name: r.name,
      type: r.type,
      sql: r.sql,
      columns: cols.map((c) => c.name),
      types: new Map(cols.map((c) => [c.name.toLowerCase(), String(c.type ?? '').toUpperCase()])),
    };
    schema.set(r.name.toLowerCase(), shape);
  }
  return schema;
}

/** The table, when the file has it (any case). */
export function table(schema: Schema, name: string): TableShape | undefined {
  return schema.get(name.toLowerCase());
}

/** True when the table exists and has every one of these columns (any case). */
export function hasColumns(schema: Schema, name: string, columns: string[]): boolean {
  const t = table(schema, name);
  if (!t) return false;
  return columns.every((c) => t.types.has(c.toLowerCase()));
}

/** The column's name as the file spells it, quoted; undefined when absent. */
export function col(t: TableShape, name: string): string | undefined {
  const found = t.columns.find((c) => c.toLowerCase() === name.toLowerCase());
  return found === undefined ? undefined : quoteIdent(found);
}

/** A SQL string literal. */
export function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** Tables of a virtual-table module (e.g. vec0, vss0, fts5). */
export function virtualTables(schema: Schema, module: string): TableShape[] {
  const re = new RegExp(`\\bUSING\\s+${module}\\s*\\(`, 'i');
  return [...schema.values()].filter((t) => re.test(t.sql));
}
