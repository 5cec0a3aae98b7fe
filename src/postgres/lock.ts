// One migrate run per target (per shard with --shard): a Postgres advisory lock, so two runs
// against the same database cannot interleave their batches.
import { createHash } from 'node:crypto';
import type { Db } from './connection.js';
import { RunError } from '../errors.js';

export interface RunLock {
  release(): Promise<void>;
}

/** A stable 31-bit lock key for "memory-migrate" and the shard label. */
export function lockKey(shard: string | null): number {
  const h = createHash('sha256').update(`memory-migrate:${shard ?? 'all'}`).digest();
  return h.readUInt32BE(0) & 0x7fffffff;
}

export async function acquireRunLock(db: Db, shard: string | null): Promise<RunLock> {
  const release = await db.tryAdvisoryLock(lockKey(shard));
  if (!release) {
    throw new RunError(
      `another memory-migrate run${shard ? ` for shard ${shard}` : ''} is writing to this target: wait for it to finish, then run again`,
    );
  }
  return { release };
}

/**
 * Vector index builds take turns: shards of one migration finish at about the same time, and
 * two CREATE INDEX of one name at once fail ("duplicate key … pg_class_relname_nsp_index").
 * Waits (polling) for a shard that is building; the next one then finds the index there.
 */
export async function acquireIndexLock(db: Db, onWait: () => void = () => {}, pollMs = 250): Promise<RunLock> {
  const key = lockKey('vector-index-build');
  for (let waited = false; ; waited = true) {
    const release = await db.tryAdvisoryLock(key);
    if (release) return { release };
    if (!waited) onWait();
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
