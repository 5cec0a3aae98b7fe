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
// What is sent is the canonical text minus its final newline, so a vector is a function of
// its cache key alone; the stored content is never changed.
import { canonicalize } from '../source/canonical.js';
import { planBatches } from './batching.js';
import { embeddingCacheKey, EmbeddingCache, type CacheEntry } from './cache.js';
import { estimateCostUsd, modelInfo, PRICES_AS_OF } from './models.js';
import { truncateToTokens } from './tokens.js';
import type { EmbedInput, EmbedResult, EmbedStats, EmbeddingProvider } from './types.js';

/** Providers that can size a job without sending it (both of ours can). */
export interface PlanningProvider extends EmbeddingProvider {
  plan?(texts: string[]): { tokens: number; requests: number; truncated: number };
  readonly concurrency?: number;
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

  /** Vectors (or rejections) for `inputs`, in input order. */
  async embedTexts(inputs: EmbedInput[]): Promise<EmbedResult[]> {
    const results: (EmbedResult | undefined)[] = new Array(inputs.length);
    if (inputs.length === 0) return [];
    const groups = this.group(inputs);

    const hits = await this.cache.getMany(groups.map((g) => g.key));
    const misses: Group[] = [];
    for (const g of groups) {
      const v = hits.get(g.key);
      if (v && v.length === this.provider.dimensions) {
        for (const i of g.indices) results[i] = { vector: v };
        this.stats.cached += g.indices.length;
      } else {
        misses.push(g);
      }
    }

    if (misses.length > 0) {
      const out = await this.provider.embed(
        misses.map((g) => ({ text: g.text, ...(inputs[g.indices[0]!]!.ref ? { ref: inputs[g.indices[0]!]!.ref } : {}) })),
        this.stats,
      );
      const toStore: CacheEntry[] = [];
      misses.forEach((g, k) => {
        const r = out[k] ?? { rejected: 'the embedding provider returned no result' };
        for (const i of g.indices) results[i] = r;
        if ('vector' in r) {
          this.stats.computed += 1;
          this.stats.cached += g.indices.length - 1;
          toStore.push({ key: g.key, model: this.provider.model, dimensions: this.provider.dimensions, vector: r.vector });
        } else {
          // The provider counted the refused text once; its repeats are refused too.
          this.stats.rejected += g.indices.length - 1;
        }
      });
      await this.cache.putMany(toStore);
    }
    return results.map((r) => r ?? { rejected: 'internal error: no result' });
  }

  /**
   * Dry-run sizing: what embedTexts(inputs) would send, without sending or writing anything
   * (the cache table is only read).
   */
  async preflight(inputs: EmbedInput[]): Promise<Preflight> {
    const groups = this.group(inputs);
    const hits = await this.cache.getMany(groups.map((g) => g.key));
    const misses = groups.filter((g) => !hits.get(g.key));
    const texts = misses.map((g) => g.text);
    const cached = inputs.length - misses.length;

    const p = this.provider as PlanningProvider;
    let plan: { tokens: number; requests: number; truncated: number };
    if (typeof p.plan === 'function') {
      plan = p.plan(texts);
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
