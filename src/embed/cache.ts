// The embedding cache, in two layers, so no text is ever paid for twice:
// 1. an in-memory LRU (lru-cache) bounded by BYTES, not entries: 50,000 1536-d vectors would
//    be 300 MB, so the default budget is 64 MB;
// 2. an optional persistent layer, the `embedding_cache` table in the target database
//    (sql/005_tables.sql), which makes a second or resumed run send zero requests for texts it
//    has already embedded.
// The key is sha256(model | dimensions | canonical text): the same text under another model
// or width is a different entry, and texts that differ only in ways canonicalize() removes
// share one.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { canonicalize } from '../source/canonical.js';
import type { Db } from '../postgres/connection.js';
import { parseVectorText, vectorToText } from '../postgres/vector-text.js';

export function embeddingCacheKey(model: string, dimensions: number, canonicalText: string): string {
  return createHash('sha256').update(`${model}|${dimensions}|${canonicalText}`, 'utf8').digest('hex');
}

/** Cache key for a raw text: canonicalizes it first. */
export function cacheKeyForText(model: string, dimensions: number, text: string): string {
  return embeddingCacheKey(model, dimensions, canonicalize(text));
}

export interface CacheEntry {
  key: string;
  model: string;
  dimensions: number;
  vector: Float32Array;
}

export interface EmbeddingCacheOptions {
  /** Persistent layer; without it only the in-memory LRU is used. */
  db?: Db;
  /** Memory budget of the LRU in bytes (default 64 MB). */
  maxBytes?: number;
  /** Read the table but never write it (for --dry-run). */
  dryRun?: boolean;
  /** Rows per INSERT statement (default 200). */
  insertBatch?: number;
  /** Keys per SELECT (default 1,000). */
  selectBatch?: number;
}

export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
// Per-entry overhead on top of the float data: key string, map node, typed-array header.
const ENTRY_OVERHEAD = 200;

export class EmbeddingCache {
  readonly db?: Db;
  readonly dryRun: boolean;
  private readonly lru: LRUCache<string, Float32Array>;
  private readonly insertBatch: number;
  private readonly selectBatch: number;
  /** Lookups answered by the LRU / by the table, and rows written to the table. */
  readonly counters = { memoryHits: 0, tableHits: 0, misses: 0, written: 0 };

  constructor(opts: EmbeddingCacheOptions = {}) {
    this.db = opts.db;
    this.dryRun = opts.dryRun ?? false;
    this.insertBatch = opts.insertBatch ?? 200;
    this.selectBatch = opts.selectBatch ?? 1000;
    this.lru = new LRUCache<string, Float32Array>({
      maxSize: Math.max(1024, opts.maxBytes ?? DEFAULT_CACHE_BYTES),
      sizeCalculation: (v) => v.byteLength + ENTRY_OVERHEAD,
    });
  }

  /** Entries in the in-memory layer. */
  get memoryEntries(): number {
    return this.lru.size;
  }

  /** Bytes accounted to the in-memory layer. */
  get memoryBytes(): number {
    return this.lru.calculatedSize;
  }

  /**
   * Looks keys up in the LRU, then the misses in the table (one query per `selectBatch`
   * keys). Table hits are promoted into the LRU. Missing keys are absent from the map.
   */
  async getMany(keys: readonly string[]): Promise<Map<string, Float32Array>> {
    const found = new Map<string, Float32Array>();
    const misses: string[] = [];
    const uniqueKeys = new Set(keys);
    for (const k of uniqueKeys) {
      const v = this.lru.get(k);
      if (v) {
        found.set(k, v);
        this.counters.memoryHits++;
      } else {
        misses.push(k);
      }
    }
    if (this.db && misses.length > 0) {
      for (let i = 0; i < misses.length; i += this.selectBatch) {
        const chunk = misses.slice(i, i + this.selectBatch);
        const rows = await this.db.query<{ key: string; embedding: string }>(
          'SELECT key, embedding::text AS embedding FROM embedding_cache WHERE key = ANY($1::bpchar[])',
          [chunk],
        );
        for (const r of rows) {
          const key = r.key.trim();
          const vec = parseVectorText(r.embedding);
          found.set(key, vec);
          this.lru.set(key, vec);
          this.counters.tableHits++;
        }
      }
    }
    this.counters.misses += uniqueKeys.size - found.size;
    return found;
  }

  /**
   * Stores vectors in the LRU and (unless dryRun) in the table, with
   * INSERT ... ON CONFLICT DO NOTHING so concurrent runs and resumed runs never conflict.
   */
  async putMany(entries: readonly CacheEntry[]): Promise<void> {
    for (const e of entries) this.lru.set(e.key, e.vector);
    if (!this.db || this.dryRun || entries.length === 0) return;
    for (let i = 0; i < entries.length; i += this.insertBatch) {
      const chunk = entries.slice(i, i + this.insertBatch);
      const params: unknown[] = [];
      const rows: string[] = [];
      for (const e of chunk) {
        const p = params.length;
        rows.push(`($${p + 1}, $${p + 2}, $${p + 3}, $${p + 4}::vector)`);
        params.push(e.key, e.model, e.dimensions, vectorToText(e.vector));
      }
      await this.db.query(
        `INSERT INTO embedding_cache (key, model, dimensions, embedding) VALUES ${rows.join(', ')} ON CONFLICT (key) DO NOTHING`,
        params,
      );
      this.counters.written += chunk.length;
    }
  }

  /** Drops the in-memory layer (the table is untouched). */
  clearMemory(): void {
    this.lru.clear();
  }
}

