// Dedup keys: what makes two memories "the same" (one user, one dedup hash), and the keys
// a first load keeps for the whole run instead of asking the target.

/** A memory's dedup key: its user and dedup hash. */
export function dedupKey(userId: string | null, dedupHash: string | null): string {
  return `${userId}\u0000${dedupHash}`;
}

/**
 * The first row id stored for each (user, dedup hash) in this run: a first load finds
 * duplicates of earlier batches here instead of asking the target. It holds one entry per
 * stored row for the whole run, and the peak memory of a long run grows with every entry,
 * so each is kept small: the 32 hash bytes as a one-byte string, under a map per user,
 * rather than a dedupKey string with 64 hex digits.
 */
export class RunDedupKeys {
  private readonly byUser = new Map<string, Map<string, string>>();

  get(userId: string, dedupHash: string): string | undefined {
    return this.byUser.get(userId)?.get(compactHash(dedupHash));
  }

  set(userId: string, dedupHash: string, id: string): void {
    let owners = this.byUser.get(userId);
    if (!owners) {
      owners = new Map();
      this.byUser.set(userId, owners);
    }
    owners.set(compactHash(dedupHash), id);
  }
}

// A stored row is looked up and then recorded with the same hash: remember the last answer
// rather than decode the hex twice per row.
let lastHex = '';
let lastCompact = '';

function compactHash(hex: string): string {
  if (hex !== lastHex) {
    lastCompact = Buffer.from(hex, 'hex').toString('latin1');
    lastHex = hex;
  }
  return lastCompact;
}
