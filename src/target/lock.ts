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
