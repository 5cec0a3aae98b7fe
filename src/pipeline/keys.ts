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

/** The filter's size: 2^27 bits, 16 MB, whatever the size of the file. */
const FILTER_BITS_LOG2 = 27;
const FILTER_MASK = 2 ** FILTER_BITS_LOG2 - 1;
/** Bits set per key: four 32-bit words of the dedup hash (itself SHA-256), salted by the user. */
const FILTER_PROBES = 4;

/**
 * The dedup keys a first load has decided to store, as a Bloom filter of fixed size. The
 * target holds only this run's rows then, so a key the filter has never seen is certainly not
 * stored and the batch does not ask the target about it; only a key it may have seen (a
 * duplicate, or a false positive) is asked (memories_dedup_idx). Asking for every key cost the
 * server more than the Map of keys it replaced saved Node. False positives, which cost a
 * lookup and never a wrong answer: under one in a million keys at 1M stored rows, 0.4% at
 * 10M, a third at 50M.
 */
export class StoredKeyFilter {
  private readonly words = new Int32Array(2 ** (FILTER_BITS_LOG2 - 5));
  /** One salt per user, so one text stored by two users sets different bits. */
  private readonly salts = new Map<string, number>();

  mayHold(userId: string, dedupHash: string): boolean {
    const salt = this.salt(userId);
    for (let i = 0; i < FILTER_PROBES; i++) {
      const bit = (parseInt(dedupHash.slice(i * 8, i * 8 + 8), 16) ^ salt) & FILTER_MASK;
      if ((this.words[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }

  add(userId: string, dedupHash: string): void {
    const salt = this.salt(userId);
    for (let i = 0; i < FILTER_PROBES; i++) {
      const bit = (parseInt(dedupHash.slice(i * 8, i * 8 + 8), 16) ^ salt) & FILTER_MASK;
      this.words[bit >>> 5]! |= 1 << (bit & 31);
    }
  }

  private salt(userId: string): number {
    let salt = this.salts.get(userId);
    if (salt === undefined) {
      // FNV-1a over the UTF-16 code units.
      salt = 0x811c9dc5;
      for (let i = 0; i < userId.length; i++) salt = Math.imul(salt ^ userId.charCodeAt(i), 0x01000193);
      this.salts.set(userId, salt);
    }
    return salt;
  }
}
