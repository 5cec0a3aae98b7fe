// Scratch SQLite memory files for the error suites (test/e2e/errors-*.test.ts): a temp folder
// per test file, removed when its tests end, and small memory files in the app's layout.
import { after } from 'node:test';
import Database from 'better-sqlite3';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ScratchFolder {
  /** The folder itself (a test may chmod it; it is made removable again at the end). */
  root: string;
  /** A path named `name` in a new subfolder of root, so no two calls collide. */
  tmpPath(name: string): string;
}

/** A temp folder for the calling test file; call it at the file's top level (it registers after()). */
export function scratchFolder(prefix: string): ScratchFolder {
  const root = mkdtempSync(join(tmpdir(), prefix));
  after(() => {
    try {
      chmodSync(root, 0o700);
    } catch {
      /* gone */
    }
    rmSync(root, { recursive: true, force: true });
  });
  let counter = 0;
  function tmpPath(name: string): string {
    const dir = join(root, `t${++counter}`);
    mkdirSync(dir, { recursive: true });
    return join(dir, name);
  }
  return { root, tmpPath };
}

/** A small memory file in the app's layout: `n` rows over 3 users. */
export function makeDb(path: string, n: number, schema = STANDARD): void {
  const db = new Database(path);
  db.exec(schema);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, metadata, created_at) VALUES (?, ?, ?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      ins.run(`mem_${String(i).padStart(4, '0')}`, `user_${i % 3}`, `memory ${i}: the user likes item ${i * 7} `.repeat(4), '{"category":"pref"}', '2024-05-06 07:08:09');
    }
  })();
  db.close();
}
export const STANDARD = `CREATE TABLE memories (
  id TEXT PRIMARY KEY, user_id TEXT, content TEXT, embedding BLOB, metadata TEXT,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)`;
