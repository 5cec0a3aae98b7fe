// An offline, deterministic embedder for trial runs, demos and tests: no network, no key,
// the same vector for the same text on every machine.
import { UsageError } from '../errors.js';
import { LOCAL_DEFAULT_DIMENSIONS, LOCAL_EMBEDDING_MODEL, checkDimensionsValue } from './models.js';
import type { EmbedInput, EmbedResult, EmbedStats, EmbeddingProvider } from './types.js';

/** Model name recorded for vectors made by LocalProvider. */
export const LOCAL_MODEL = LOCAL_EMBEDDING_MODEL;
export { LOCAL_DEFAULT_DIMENSIONS };

export interface LocalProviderOptions {
  /** Vector width (default 384). */
  dimensions?: number;
}

/**
 * `local-hash-v1`: feature hashing of lowercased word unigrams, word bigrams and character
 * 3-grams into `dimensions` buckets with a ±1 sign (FNV-1a 32-bit for the bucket, a murmur3
 * finaliser of the same hash for the sign), then L2-normalised.
 *
 * It is LEXICAL, not semantic: texts that share words and spellings come out close, but
 * synonyms or paraphrases do not. Good enough to exercise search, dedup and verification
 * offline; never a substitute for a real embedding model. Vectors are never zero: a text with
 * no features hashes a fixed marker instead.
 *
 * Stats: this provider sends no requests and truncates nothing; the service counts `computed`.
 */
export class LocalProvider implements EmbeddingProvider {
  readonly model = LOCAL_MODEL;
  readonly dimensions: number;
  readonly inflight = 0;

  constructor(opts: LocalProviderOptions = {}) {
    const dims = opts.dimensions ?? LOCAL_DEFAULT_DIMENSIONS;
    checkDimensionsValue(dims);
    if (dims < 2) throw new UsageError(`--dimensions for ${LOCAL_MODEL} must be at least 2`);
    this.dimensions = dims;
  }

  async embed(inputs: EmbedInput[], _stats: EmbedStats): Promise<EmbedResult[]> {
    return inputs.map((inp) => ({ vector: localEmbedding(inp.text, this.dimensions) }));
  }

  /** Preflight: nothing is sent and nothing costs money. */
  plan(texts: string[]): { tokens: number; requests: number; truncated: number } {
    void texts;
    return { tokens: 0, requests: 0, truncated: 0 };
  }
}

const EMPTY_MARKER = '\u0000local-hash-v1:empty';
const encoder = new TextEncoder();

/** FNV-1a, 32-bit, over the UTF-8 bytes of s. */
export function fnv1a32(s: string): number {
  const bytes = encoder.encode(s);
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** murmur3's 32-bit finaliser: decorrelates the sign bit from the bucket bits. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Features of a text: word unigrams (weight 1), word bigrams (1), character 3-grams (0.5). */
export function localFeatures(text: string): Array<[string, number]> {
  const lower = text.normalize('NFKC').toLowerCase();
  const words = lower.match(/[\p{L}\p{N}]+/gu) ?? [];
  const out: Array<[string, number]> = [];
  for (let i = 0; i < words.length; i++) {
    out.push([`w:${words[i]}`, 1]);
    if (i + 1 < words.length) out.push([`b:${words[i]} ${words[i + 1]}`, 1]);
  }
  const squeezed = lower.replace(/\s+/g, ' ').trim();
  if (squeezed.length > 0) {
    const chars = Array.from(` ${squeezed} `);
    for (let i = 0; i + 3 <= chars.length; i++) out.push([`c:${chars[i]}${chars[i + 1]}${chars[i + 2]}`, 0.5]);
  }
  return out;
}

/** The local-hash-v1 vector of `text`: unit length, deterministic, never zero. */
export function localEmbedding(text: string, dimensions = LOCAL_DEFAULT_DIMENSIONS): Float32Array {
  const acc = new Float64Array(dimensions);
  const add = (feature: string, weight: number) => {
    const h = fnv1a32(feature);
    const sign = fmix32(h) & 0x80000000 ? -1 : 1;
    acc[h % dimensions]! += sign * weight;
  };
  const features = localFeatures(text);
  for (const [f, w] of features) add(f, w);
  let norm = l2(acc);
  if (features.length === 0 || norm === 0) {
    // No features, or (astronomically unlikely) features that cancel out exactly.
    add(EMPTY_MARKER, 1);
    norm = l2(acc);
  }
  const out = new Float32Array(dimensions);
  for (let i = 0; i < dimensions; i++) out[i] = acc[i]! / norm;
  return out;
}

function l2(v: Float64Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  return Math.sqrt(s);
}
