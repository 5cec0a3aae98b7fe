// Near-duplicate measures, and the run-wide table of exact-duplicate keys. Exact duplicates
// are found by hash (src/source/canonical.ts); the measures catch rows that differ by a word
// or by punctuation.

/** Lower-cased words with punctuation stripped, as a set. */
export function wordSet(text: string): Set<string> {
  const words = text
    .normalize('NFC')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s]+/gu, ' ')
    .split(/\s+/)
    .filter((w) => w.length > 0);
  return new Set(words);
}

/** |A ∩ B| / |A ∪ B|; two empty sets are identical (1). */
export function jaccard(a: Set<string>, b: Set<string>): number {
  if (a.size === 0 && b.size === 0) return 1;
  let inter = 0;
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  for (const w of small) if (large.has(w)) inter++;
  return inter / (a.size + b.size - inter);
}

/**
 * The first row id stored for each (user, dedup hash) in this run: a first load finds
 * duplicates of earlier batches here instead of asking the target. It holds one entry per
 * stored row for the whole run, so each is kept small: the 32 hash bytes as a one-byte
 * string, under a map per user, instead of a "user\0<64 hex digits>" string: about 55 bytes
 * less per stored row, which the peak RSS of a long run otherwise grows by.
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
