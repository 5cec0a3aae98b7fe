// Packing inputs into embedding requests. A request carries at most `maxInputs` inputs and
// `maxTokens` tokens in total; every request costs latency and rate-limit budget, so we want
// as few as the limits allow.
//
// This is bin packing with a cardinality constraint, NP-hard in general, so we use two
// heuristics and keep the better plan:
// 1. first-fit-decreasing (FFD): sort by tokens, largest first, and put each input in the
//    first request it fits in. FFD never uses more than 11/9·OPT + 6/9 bins.
// 2. when FFD misses the lower bound (both limits nearly binding: requests closed by tokens
//    waste input slots), worst-fit-decreasing into exactly k requests for k = bound, bound+1,
//    ...: each input, largest first, goes to the request with the fewest tokens that still has
//    an input slot. That balances tokens and counts together.
// Any plan that meets the trivial lower bound max(ceil(n / maxInputs), ceil(totalTokens /
// maxTokens)) is provably minimal; on embedding workloads (inputs small next to the request
// limit) one of the two meets it. `minRequests` computes the bound so callers and tests can check.
//
// The order of inputs inside a request does not matter to the API (each input comes back with
// its index), so packing out of order costs nothing: results are reassembled by index.

export interface BatchLimits {
  /** Inputs per request (OpenAI: 2,048). */
  maxInputs: number;
  /** Tokens per request, summed over its inputs (OpenAI: 300,000). */
  maxTokens: number;
}

export const DEFAULT_MAX_INPUTS = 2048;
export const DEFAULT_MAX_TOKENS = 300_000;

export const DEFAULT_LIMITS: Readonly<BatchLimits> = Object.freeze({
  maxInputs: DEFAULT_MAX_INPUTS,
  maxTokens: DEFAULT_MAX_TOKENS,
});

function resolve(limits?: Partial<BatchLimits>): BatchLimits {
  const maxInputs = limits?.maxInputs ?? DEFAULT_MAX_INPUTS;
  const maxTokens = limits?.maxTokens ?? DEFAULT_MAX_TOKENS;
  if (!Number.isInteger(maxInputs) || maxInputs < 1) throw new RangeError(`maxInputs must be a positive integer (got ${maxInputs})`);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new RangeError(`maxTokens must be a positive integer (got ${maxTokens})`);
  return { maxInputs, maxTokens };
}

/** The fewest requests any packing can use: max(ceil(n / maxInputs), ceil(tokens / maxTokens)). */
export function minRequests(items: readonly { tokens: number }[], limits?: Partial<BatchLimits>): number {
  const { maxInputs, maxTokens } = resolve(limits);
  if (items.length === 0) return 0;
  let total = 0;
  for (const it of items) total += it.tokens;
  return Math.max(Math.ceil(items.length / maxInputs), Math.ceil(total / maxTokens));
}

/**
 * Splits items into requests; returns the item indices of each request (ascending inside a
 * request). An item larger than maxTokens on its own gets a request of its own (callers
 * truncate inputs to at most maxTokens first, so this only happens with inconsistent limits).
 */
export function planBatches(items: readonly { tokens: number }[], limits?: Partial<BatchLimits>): number[][] {
  const { maxInputs, maxTokens } = resolve(limits);
  const n = items.length;
  if (n === 0) return [];

  // Fast path: everything fits in one request.
  let total = 0;
  for (const it of items) total += it.tokens;
  if (n <= maxInputs && total <= maxTokens) return [items.map((_, i) => i)];

  const order = items.map((_, i) => i);
  // Largest first; ties by index so the plan is deterministic.
  order.sort((a, b) => items[b]!.tokens - items[a]!.tokens || a - b);

  const bins: number[][] = [];
  const binTokens: number[] = [];
  // Bins before `firstOpen` are full by count or have no room even for the smallest input
  // still to come; since inputs arrive largest first, that stays true, so they are skipped.
  let firstOpen = 0;
  for (let k = 0; k < order.length; k++) {
    const i = order[k]!;
    const t = items[i]!.tokens;
    let placed = false;
    for (let b = firstOpen; b < bins.length; b++) {
      if (bins[b]!.length < maxInputs && binTokens[b]! + t <= maxTokens) {
        bins[b]!.push(i);
        binTokens[b]! += t;
        placed = true;
        break;
      }
    }
    if (!placed) {
      bins.push([i]);
      binTokens.push(t);
    }
    // Advance past bins that can no longer take anything (the smallest input left is the last one).
    const smallest = items[order[order.length - 1]!]!.tokens;
    while (
      firstOpen < bins.length &&
      (bins[firstOpen]!.length >= maxInputs || binTokens[firstOpen]! + smallest > maxTokens)
    ) {
      firstOpen++;
    }
  }
  const bound = Math.max(Math.ceil(n / maxInputs), Math.ceil(total / maxTokens));
  let best = bins;
  for (let k = bound; k < best.length; k++) {
    const alt = worstFitDecreasing(items, order, k, maxInputs, maxTokens);
    if (alt) {
      best = alt;
      break;
    }
  }
  for (const b of best) b.sort((x, y) => x - y);
  return best;
}

/** Packs into exactly k requests (min-heap on tokens), or returns null when an input does not fit. */
function worstFitDecreasing(
  items: readonly { tokens: number }[],
  order: readonly number[],
  k: number,
  maxInputs: number,
  maxTokens: number,
): number[][] | null {
  const bins: number[][] = Array.from({ length: k }, () => []);
  const load: number[] = new Array<number>(k).fill(0);
  // Heap of bin numbers ordered by (load, bin number); full bins leave the heap.
  const heap: number[] = Array.from({ length: k }, (_, b) => b);
  const less = (a: number, b: number) => load[a]! < load[b]! || (load[a] === load[b] && a < b);
  const down = (pos: number) => {
    for (;;) {
      const l = 2 * pos + 1;
      const r = l + 1;
      let m = pos;
      if (l < heap.length && less(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && less(heap[r]!, heap[m]!)) m = r;
      if (m === pos) return;
      [heap[pos], heap[m]] = [heap[m]!, heap[pos]!];
      pos = m;
    }
  };
  for (const i of order) {
    if (heap.length === 0) return null;
    const b = heap[0]!;
    const t = items[i]!.tokens;
    if (load[b]! + t > maxTokens) return null;
    bins[b]!.push(i);
    load[b]! += t;
    if (bins[b]!.length >= maxInputs) {
      heap[0] = heap[heap.length - 1]!;
      heap.pop();
    }
    down(0);
  }
  return bins.filter((b) => b.length > 0);
}
