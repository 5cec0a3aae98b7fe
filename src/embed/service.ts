// The embedding path the pipeline talks to: dedupe, cache, then the provider for what is left.
//
//   inputs ──canonicalize──► cache key sha256(model|dimensions|canonical text)
//          ──dedupe──► one entry per key (identical texts in a call are embedded once)
//          ──LRU, then embedding_cache table──► hits
//          ──provider (batched, retried)──► misses ──► stored in both cache layers
//
// Counting (EmbedStats), so that cached + computed + rejected = inputs of every call:
// - `computed`: distinct texts the provider returned a vector for (counted here, not by the
//   providers);
// - `cached`: inputs served without a provider call: cache hits, and repeats of a text that
//   appears more than once in the call (they share the first occurrence's vector);
// - `rejected` (all inputs whose text the provider refused), `requests`, `retries`,
//   `tokens`, `truncated`: counted by the provider, per distinct text. A repeated refused text
//   adds its repeats to `rejected` here.
//
// Calls may overlap (the pipeline queues the next batches' texts while earlier ones are
// written): a text one call is already sending is not sent again by another, and every answer
// is written to both cache layers request by request, before its call returns, so a run
// killed with vectors in hand does not pay for them again.
//
// What is sent is the canonical text minus its final newline, so a vector is a function of
// its cache key alone; the stored content is never changed.
import { canonicalize } from '../source/canonical.js';
import { planBatches } from './batching.js';
import { embeddingCacheKey, EmbeddingCache, type CacheEntry } from './cache.js';
import { estimateCostUsd, modelInfo, PRICES_AS_OF } from './models.js';
import { truncateToTokens } from './tokens.js';
import { EmbedCancelled, type EmbedInput, type EmbedResult, type EmbedStats, type EmbeddingProvider } from './types.js';

/** Providers that can size a job without sending it (both of ours can). */
export interface PlanningProvider extends EmbeddingProvider {
  plan?(texts: string[], opts?: { first?: boolean }): { tokens: number; requests: number; truncated: number };
  readonly concurrency?: number;
}

/** Providers that queue requests across calls (the OpenAI one). */
interface QueueingProvider extends EmbeddingProvider {
  readonly queuedTokens?: number;
  readonly lookaheadTokens?: number;
  cancelQueued?(): Promise<void>;
}

export interface EmbeddingServiceOptions {
  provider: EmbeddingProvider;
  /** Default: an in-memory-only cache. */
  cache?: EmbeddingCache;
  stats: EmbedStats;
  /** Nominal seconds per request for the dry-run ETA (default 2). */
  nominalRequestSeconds?: number;
}

export interface Preflight {
  /** Inputs looked at. */
  inputs: number;
  /** Distinct uncached texts that would be sent. */
  texts: number;
  /** Exact tokens that would be sent (after dedup, cache and truncation). */
  tokens: number;
  /** HTTP requests that would be sent (without retries). */
  requests: number;
  /** Inputs served by the cache (either layer) or by an identical text in the same call. */
  cached: number;
  /** Inputs whose text would be truncated for embedding. */
  truncated: number;
  /** List-price cost; 0 when priceKnown is false (models this tool has no price for). */
  estimatedCostUsd: number;
  priceKnown: boolean;
  /** Date of the price table. */
  pricesAsOf: string;
  /** ceil(requests / concurrency) × nominal seconds per request. */
  etaSeconds: number;
}

interface Group {
  key: string;
  /** Text to send: canonical form without its final newline. */
  text: string;
  /** Input positions sharing this key; the first one's ref is the one reported. */
  indices: number[];
}

export class EmbeddingService {
  readonly provider: EmbeddingProvider;
  readonly cache: EmbeddingCache;
  readonly stats: EmbedStats;
  private readonly nominalRequestSeconds: number;
  /** Texts being embedded by a call, by cache key: a later call with the same text waits for it. */
  private readonly pending = new Map<string, Promise<EmbedResult | null>>();
  /** Set by cancelQueued: the run is stopping, nothing new is sent. */
  private stopping = false;

  constructor(opts: EmbeddingServiceOptions) {
    this.provider = opts.provider;
    this.cache = opts.cache ?? new EmbeddingCache();
    this.stats = opts.stats;
    this.nominalRequestSeconds = opts.nominalRequestSeconds ?? 2;
  }

  get model(): string {
    return this.provider.model;
  }

  get dimensions(): number {
    return this.provider.dimensions;
  }

  /** Cache key of a text under this service's model and width. */
  keyFor(text: string): string {
    return embeddingCacheKey(this.provider.model, this.provider.dimensions, canonicalize(text));
  }

  /** Tokens queued at the provider and not sent yet (0 for a provider without a queue). */
  get queuedTokens(): number {
    return (this.provider as QueueingProvider).queuedTokens ?? 0;
  }

  /** Tokens worth queueing ahead of the writer; 0 when the provider gains nothing from it. */
  get lookaheadTokens(): number {
    return (this.provider as QueueingProvider).lookaheadTokens ?? 0;
  }

  /**
   * Drops the texts not sent yet (their calls reject with EmbedCancelled) and waits for the
   * requests in flight, whose vectors still go into the cache.
   */
  async cancelQueued(): Promise<void> {
    this.stopping = true;
    const p = this.provider as QueueingProvider;
    if (typeof p.cancelQueued === 'function') await p.cancelQueued();
    await Promise.allSettled([...this.pending.values()]);
  }

  /**
   * Vectors (or rejections) for `inputs`, in input order. Calls may overlap (the pipeline
   * embeds batches ahead of the writer): a text another call is already waiting for is not
   * sent again, and each answer is in the cache before the call returns, request by request.
   */
  async embedTexts(inputs: EmbedInput[]): Promise<EmbedResult[]> {
    return (await this.submit(inputs)).done;
  }

  /**
   * embedTexts in two steps: resolves once the texts are looked up in the cache and queued
   * at the provider (so calls made in order are sent in order); `done` gives the results.
   */
  async submit(inputs: EmbedInput[]): Promise<{ done: Promise<EmbedResult[]> }> {
    const results: (EmbedResult | undefined)[] = new Array(inputs.length);
    if (inputs.length === 0) return { done: Promise.resolve([]) };
    const groups = this.group(inputs);

    // The calls already embedding a text are taken before the cache lookup: one may finish
    // while it runs (and leave `pending`), and its text must not be sent again.
    const earlier = new Map<string, Promise<EmbedResult | null>>();
    for (const g of groups) {
      const p = this.pending.get(g.key);
      if (p) earlier.set(g.key, p);
    }
    const hits = await this.cache.getMany(groups.filter((g) => !earlier.has(g.key)).map((g) => g.key));
    const misses: Group[] = [];
    const shared: Array<[Group, Promise<EmbedResult | null>]> = [];
    for (const g of groups) {
      const v = hits.get(g.key);
      const other = earlier.get(g.key) ?? this.pending.get(g.key);
      if (v && v.length === this.provider.dimensions) {
        for (const i of g.indices) results[i] = { vector: v };
        this.stats.cached += g.indices.length;
      } else if (other) {
        shared.push([g, other]);
      } else {
        misses.push(g);
      }
    }

    const settle = new Map<string, (r: EmbedResult | null) => void>();
    for (const g of misses) {
      const p = new Promise<EmbedResult | null>((resolve) => settle.set(g.key, resolve));
      this.pending.set(g.key, p);
    }
    const done = (async (): Promise<EmbedResult[]> => {
      if (misses.length > 0) {
        const finish = (g: Group, r: EmbedResult) => {
          if (this.pending.has(g.key)) {
            this.pending.delete(g.key);
            settle.get(g.key)!(r);
          }
        };
        const stored = new Set<string>();
        const toEntry = (g: Group, vector: Float32Array): CacheEntry => ({
          key: g.key,
          model: this.provider.model,
          dimensions: this.provider.dimensions,
          vector,
        });
        let out: EmbedResult[];
        try {
          out = await this.provider.embed(
            misses.map((g) => ({ text: g.text, ...(inputs[g.indices[0]!]!.ref ? { ref: inputs[g.indices[0]!]!.ref } : {}) })),
            this.stats,
            {
              onResults: async (answered) => {
                const entries: CacheEntry[] = [];
                for (const { index, result } of answered) {
                  if ('vector' in result) entries.push(toEntry(misses[index]!, result.vector));
                }
                await this.cache.putMany(entries);
                for (const { index, result } of answered) {
                  stored.add(misses[index]!.key);
                  finish(misses[index]!, result);
                }
              },
            },
          );
        } catch (err) {
          // Texts of this call that others wait for: null tells them to send it themselves.
          for (const g of misses) {
            if (this.pending.has(g.key)) {
              this.pending.delete(g.key);
              settle.get(g.key)!(null);
            }
          }
          throw err;
        }
        // A provider that does not report per request (the local one): store what it returned now.
        const late: CacheEntry[] = [];
        misses.forEach((g, k) => {
          const r = out[k];
          if (r && 'vector' in r && !stored.has(g.key)) late.push(toEntry(g, r.vector));
        });
        await this.cache.putMany(late);
        misses.forEach((g, k) => {
          const r = out[k] ?? { rejected: 'the embedding provider returned no result' };
          finish(g, r);
          for (const i of g.indices) results[i] = r;
          if ('vector' in r) {
            this.stats.computed += 1;
            this.stats.cached += g.indices.length - 1;
          } else {
            // The provider counted the refused text once; its repeats are refused too.
            this.stats.rejected += g.indices.length - 1;
          }
        });
      }

      for (const [g, p] of shared) {
        const r = await p;
        if (r === null) {
          if (this.stopping) throw new EmbedCancelled();
          // The call that was sending it failed: send it ourselves.
          const [again] = await this.embedTexts([{ text: inputs[g.indices[0]!]!.text, ...(inputs[g.indices[0]!]!.ref ? { ref: inputs[g.indices[0]!]!.ref } : {}) }]);
          for (const i of g.indices) results[i] = again!;
          if (g.indices.length > 1) {
            if ('vector' in again!) this.stats.cached += g.indices.length - 1;
            else this.stats.rejected += g.indices.length - 1;
          }
          continue;
        }
        for (const i of g.indices) results[i] = r;
        if ('vector' in r) this.stats.cached += g.indices.length;
        else this.stats.rejected += g.indices.length;
      }
      return results.map((r) => r ?? { rejected: 'internal error: no result' });
    })();
    // The caller awaits it; until then (or if it stops first) a failure is not unhandled.
    done.catch(() => {});
    return { done };
  }

  /**
   * Dry-run sizing: what embedTexts(inputs) would send, without sending or writing anything
   * (the cache table is only read).
   */
  async preflight(inputs: EmbedInput[], opts: { first?: boolean } = {}): Promise<Preflight> {
    const groups = this.group(inputs);
    const hits = await this.cache.getMany(groups.map((g) => g.key));
    const misses = groups.filter((g) => !hits.get(g.key));
    const texts = misses.map((g) => g.text);
    const cached = inputs.length - misses.length;

    const p = this.provider as PlanningProvider;
    let plan: { tokens: number; requests: number; truncated: number };
    if (typeof p.plan === 'function') {
      plan = p.plan(texts, opts);
    } else {
      // A provider without its own planner: OpenAI's limits.
      let tokens = 0;
      let truncated = 0;
      const items = texts.map((t) => {
        const r = truncateToTokens(t, 8191);
        tokens += r.tokens;
        if (r.truncated) truncated++;
        return { tokens: r.tokens };
      });
      plan = { tokens, requests: planBatches(items).length, truncated };
    }
    const cost = estimateCostUsd(this.provider.model, plan.tokens);
    const concurrency = Math.max(1, p.concurrency ?? 1);
    return {
      inputs: inputs.length,
      texts: texts.length,
      tokens: plan.tokens,
      requests: plan.requests,
      cached,
      truncated: plan.truncated,
      estimatedCostUsd: cost ?? 0,
      priceKnown: cost !== null && modelInfo(this.provider.model) !== undefined,
      pricesAsOf: PRICES_AS_OF,
      etaSeconds: Math.ceil(plan.requests / concurrency) * this.nominalRequestSeconds,
    };
  }

  private group(inputs: EmbedInput[]): Group[] {
    const byKey = new Map<string, Group>();
    const groups: Group[] = [];
    inputs.forEach((inp, i) => {
      const canonical = canonicalize(inp.text);
      const key = embeddingCacheKey(this.provider.model, this.provider.dimensions, canonical);
      let g = byKey.get(key);
      if (!g) {
        g = { key, text: canonical.endsWith('\n') ? canonical.slice(0, -1) : canonical, indices: [] };
        byKey.set(key, g);
        groups.push(g);
      }
      g.indices.push(i);
    });
    return groups;
  }
}
