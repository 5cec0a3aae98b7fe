// Dedup keys: what makes two memories "the same" (one user, one dedup hash), and the keys a
// run keeps when it has no target to ask.
import { ScratchKeys } from '../source/scratch-keys.js';

/** A memory's dedup key: its user and dedup hash. */
export function dedupKey(userId: string | null, dedupHash: string | null): string {
  return `${userId}\u0000${dedupHash}`;
}

/**
 * The first row id for each (user, dedup hash) a run would store, when there is no target to
 * ask: a dry run (its rows are never written) and the plugin backfill (a plugin holds no dedup
 * keys). On disk (ScratchKeys), so a run's memory does not grow with its rows; close() when the
 * run ends.
 */
export class RunDedupKeys {
  private readonly store = new ScratchKeys();

  get(userId: string, dedupHash: string): string | undefined {
    return this.store.get(dedupKey(userId, dedupHash));
  }

  set(userId: string, dedupHash: string, id: string): void {
    this.store.set(dedupKey(userId, dedupHash), id);
  }

  close(): void {
    this.store.close();
  }
}
