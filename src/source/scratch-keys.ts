// A run's scratch key-value store on disk: a temporary SQLite file for what a run must remember
// about every row it reads but can ask no database about (a dry run's dedup keys and the texts
// it would embed, the plugin backfill's dedup keys). Kept in a Map, that state grew with the
// source, some 450 bytes a row (issue 19); here it costs a bounded page cache and a file in the
// temp folder that is deleted when the run ends.
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** SQLite's page cache for the file, in KiB (PRAGMA cache_size takes negative KiB). */
const CACHE_KIB = 16 * 1024;
/** Writes per transaction: a commit per write would hand every dirty page to the OS each time. */
const WRITES_PER_COMMIT = 10_000;

export class ScratchKeys {
  private readonly dir: string;
  private readonly db: Database.Database;
  private readonly getStatement: Database.Statement<[string], string | undefined>;
  private readonly setStatement: Database.Statement<[string, string]>;
  private writes = 0;
  private readonly removeOnExit = () => this.close();

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'mm-scratch-keys-'));
    this.db = new Database(join(this.dir, 'keys.db'));
    // Nothing here outlives the process: no journal, no fsync, no other connection.
    this.db.pragma('journal_mode = OFF');
    this.db.pragma('synchronous = OFF');
    this.db.pragma('locking_mode = EXCLUSIVE');
    this.db.pragma(`cache_size = -${CACHE_KIB}`);
    this.db.exec('CREATE TABLE keys (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID');
    this.getStatement = this.db.prepare<[string], string | undefined>('SELECT value FROM keys WHERE key = ?').pluck();
    this.setStatement = this.db.prepare<[string, string]>('INSERT OR REPLACE INTO keys (key, value) VALUES (?, ?)');
    process.once('exit', this.removeOnExit);
  }

  get(key: string): string | undefined {
    return this.getStatement.get(key);
  }

  has(key: string): boolean {
    return this.getStatement.get(key) !== undefined;
  }

  set(key: string, value: string): void {
    if (this.writes === 0) this.db.exec('BEGIN');
    this.setStatement.run(key, value);
    if (++this.writes >= WRITES_PER_COMMIT) {
      this.db.exec('COMMIT');
      this.writes = 0;
    }
  }

  /** Closes and deletes the file; safe to call twice. */
  close(): void {
    process.off('exit', this.removeOnExit);
    if (this.db.open) this.db.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
