// The backfill's progress, in a small JSON file next to the source (`<sqlite>.to-plugin.ledger.json`
// unless --ledger-file says otherwise). A plugin is any HTTP server, so there is no table of
// ours to keep a checkpoint in, and the source is read-only. Each entry is keyed by what makes
// two runs the same work: the source's sha256, the plugin URL (without credentials), the
// namespace template and the row filter. It holds the last source rowid whose whole batch the
// plugin has acknowledged, and the ids rejected at or before it (retried by the next run).
// The file is replaced atomically (write a temporary file, fsync, rename) after every batch, so
// a kill -9 leaves the previous checkpoint or the new one, never a torn file. Losing it costs
// only time: the memory ids are deterministic, so a run from scratch upserts in place.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync, existsSync, unlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { UsageError, errorMessage } from '../errors.js';

export interface LedgerEntry {
  /** Source rowid up to which every batch is acknowledged by the plugin. */
  checkpointRowid: number;
  /** Memory source ids the plugin rejected (4xx) at or before the checkpoint: sent again next time. */
  rejectedIds: string[];
  written: number;
  finished: boolean;
  updatedAt: string;
  plugin: string;
  template: string;
}

interface LedgerFile {
  version: 1;
  entries: Record<string, LedgerEntry>;
}

export function defaultLedgerPath(sqlite: string): string {
  return `${sqlite}.to-plugin.ledger.json`;
}

export function ledgerKey(parts: { sourceSha256: string; plugin: string; template: string; filter: unknown }): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);
}

export class PluginLedger {
  private data: LedgerFile;

  private constructor(
    readonly path: string,
    data: LedgerFile,
  ) {
    this.data = data;
  }

  /** Reads the ledger (a missing file is an empty one). A file that is not ours is exit 2. */
  static open(path: string): PluginLedger {
    if (!existsSync(path)) return new PluginLedger(path, { version: 1, entries: {} });
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new UsageError(`the backfill ledger ${path} cannot be read (${errorMessage(err)}): delete it to start over (ids are deterministic, nothing doubles) or pass --ledger-file`);
    }
    const d = parsed as Partial<LedgerFile>;
    if (d?.version !== 1 || typeof d.entries !== 'object' || d.entries === null) {
      throw new UsageError(`${path} is not a memory-migrate backfill ledger: delete it or pass --ledger-file`);
    }
    return new PluginLedger(path, d as LedgerFile);
  }

  get(key: string): LedgerEntry | undefined {
    return this.data.entries[key];
  }

  /** Checks the file can be written, before anything is sent (exit 2 otherwise). */
  assertWritable(): void {
    const probe = `${this.path}.${process.pid}.probe`;
    try {
      closeSync(openSync(probe, 'w'));
      unlinkSync(probe);
    } catch (err) {
      throw new UsageError(`cannot write the backfill ledger next to ${this.path} (${errorMessage(err)}): pass --ledger-file with a writable path`);
    }
  }

  set(key: string, entry: LedgerEntry): void {
    this.data.entries[key] = entry;
    const tmp = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, JSON.stringify(this.data, null, 1) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }
}
