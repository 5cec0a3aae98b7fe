// The embedding models we know by name: their native width, whether the API accepts a
// `dimensions` parameter, the tokenizer they use and their list price. Any other model name
// (Ollama, vLLM, TEI, Azure deployment names...) is allowed as long as the operator says how
// wide its vectors are with --dimensions: nothing else about it can be guessed.
import { UsageError } from '../errors.js';

/** The offline, deterministic embedder (src/embed/local-provider.ts). */
export const LOCAL_EMBEDDING_MODEL = 'local-hash-v1';
export const LOCAL_DEFAULT_DIMENSIONS = 384;

/**
 * The default OpenAI model. The seed used text-embedding-3-large (3072-d); we default to
 * text-embedding-3-small (1536-d) because the vectors stored in the source SQLite files are
 * 1536-d text-embedding-3-small vectors, so they can be reused instead of paid for again.
 */
export const DEFAULT_OPENAI_MODEL = 'text-embedding-3-small';

/** pgvector's `vector` type holds at most 16,000 dimensions. */
export const MAX_VECTOR_DIMENSIONS = 16000;

/** OpenAI's per-input limit is 8,192 tokens; tools (and we) stay one below. */
export const DEFAULT_MAX_INPUT_TOKENS = 8191;

export interface ModelInfo {
  name: string;
  /** Native (and default) vector width. */
  dimensions: number;
  /** Whether the API accepts `dimensions` to shorten the vectors. */
  supportsDimensions: boolean;
  /** Tokenizer encoding, for token-exact batching. */
  encoding: 'cl100k_base' | null;
  /** List price in US dollars per 1M input tokens (see PRICES_AS_OF). */
  usdPerMillionTokens: number;
}

/**
 * Date the prices below were taken: OpenAI list prices (standard tier, not Batch API) as
 * published in 2025. Prices change: the dry-run preflight labels its estimate with this date.
 */
export const PRICES_AS_OF = '2025-06-01';

export const KNOWN_MODELS: Readonly<Record<string, ModelInfo>> = Object.freeze({
  'text-embedding-3-small': {
    name: 'text-embedding-3-small',
    dimensions: 1536,
    supportsDimensions: true,
    encoding: 'cl100k_base',
    usdPerMillionTokens: 0.02,
  },
  'text-embedding-3-large': {
    name: 'text-embedding-3-large',
    dimensions: 3072,
    supportsDimensions: true,
    encoding: 'cl100k_base',
    usdPerMillionTokens: 0.13,
  },
  'text-embedding-ada-002': {
    name: 'text-embedding-ada-002',
    dimensions: 1536,
    supportsDimensions: false,
    encoding: 'cl100k_base',
    usdPerMillionTokens: 0.1,
  },
  [LOCAL_EMBEDDING_MODEL]: {
    name: LOCAL_EMBEDDING_MODEL,
    dimensions: LOCAL_DEFAULT_DIMENSIONS,
    // Feature hashing works at any width.
    supportsDimensions: true,
    encoding: null,
    usdPerMillionTokens: 0,
  },
});

export function modelInfo(model: string): ModelInfo | undefined {
  return Object.prototype.hasOwnProperty.call(KNOWN_MODELS, model) ? KNOWN_MODELS[model] : undefined;
}

export function isKnownModel(model: string): boolean {
  return modelInfo(model) !== undefined;
}

/** Native width of a known model; UsageError for an unknown one. */
export function defaultDimensions(model: string): number {
  const info = modelInfo(model);
  if (!info) throw unknownModel(model);
  return info.dimensions;
}

/** Whether `dimensions` may be sent for this model. Unknown models: false (see resolveDimensions). */
export function supportsDimensions(model: string): boolean {
  return modelInfo(model)?.supportsDimensions ?? false;
}

/** List-price cost of embedding `tokens` tokens; null when the model's price is unknown. */
export function estimateCostUsd(model: string, tokens: number): number | null {
  const info = modelInfo(model);
  if (!info) return null;
  return (tokens / 1_000_000) * info.usdPerMillionTokens;
}

export interface ResolvedDimensions {
  dimensions: number;
  /** Whether the request should carry `dimensions`. */
  send: boolean;
}

/**
 * Validates --model / --dimensions together.
 * - Known model, no --dimensions: its native width, nothing sent.
 * - Known model that supports `dimensions`: 1..native; sent when it differs from native.
 * - Known model that does not (ada-002): only its native width is accepted.
 * - Unknown model: --dimensions is required; it is sent as given (compatible servers that
 *   do not understand it ignore it, and the response width is checked either way).
 */
export function resolveDimensions(model: string, requested?: number): ResolvedDimensions {
  if (requested !== undefined) checkDimensionsValue(requested);
  const info = modelInfo(model);
  if (!info) {
    if (requested === undefined) throw unknownModel(model);
    return { dimensions: requested, send: true };
  }
  if (requested === undefined || requested === info.dimensions) {
    return { dimensions: info.dimensions, send: false };
  }
  if (!info.supportsDimensions) {
    throw new UsageError(
      `${model} does not support --dimensions (it always returns ${info.dimensions}); ` +
        `drop --dimensions or use text-embedding-3-small / text-embedding-3-large`,
    );
  }
  if (requested > info.dimensions) {
    throw new UsageError(`--dimensions ${requested} is larger than ${model}'s ${info.dimensions}`);
  }
  return { dimensions: requested, send: info.encoding !== null };
}

export function checkDimensionsValue(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_VECTOR_DIMENSIONS) {
    throw new UsageError(`--dimensions must be an integer from 1 to ${MAX_VECTOR_DIMENSIONS} (got ${n})`);
  }
}

function unknownModel(model: string): UsageError {
  const known = Object.keys(KNOWN_MODELS).join(', ');
  return new UsageError(
    `unknown embedding model ${model}: pass --dimensions N with the width of its vectors ` +
      `(known models: ${known})`,
  );
}
