// The embedding side of the pipeline: something that turns texts into vectors, and the
// counters the report needs.

export interface EmbedStats {
  /** Vectors reused from the source file (no API call). */
  reused: number;
  /** Vectors served from the in-memory LRU or the persistent embedding_cache table. */
  cached: number;
  /** Vectors computed by the provider in this run. */
  computed: number;
  /** HTTP requests sent (including retried attempts). */
  requests: number;
  /** Retries after 408/409/429/5xx or network errors. */
  retries: number;
  /** Tokens sent to the provider. */
  tokens: number;
  /** Inputs truncated to the per-input token limit (for embedding only). */
  truncated: number;
  /** Inputs the provider refused (400) after isolation. */
  rejected: number;
  /** Answers that were 429 (rate limited, or a request over the token limit, which is split). */
  rateLimited: number;
  /** Time requests were held back to stay inside the server's rate limits. */
  throttledMs: number;
  /** The server's limits as its x-ratelimit-* headers last said; null until they did. */
  rateLimit: { tokensPerMin: number; requestsPerMin: number } | null;
}

export function emptyEmbedStats(): EmbedStats {
  return {
    reused: 0,
    cached: 0,
    computed: 0,
    requests: 0,
    retries: 0,
    tokens: 0,
    truncated: 0,
    rejected: 0,
    rateLimited: 0,
    throttledMs: 0,
    rateLimit: null,
  };
}

/** A text to embed, with the ids it belongs to (for reject reporting). */
export interface EmbedInput {
  text: string;
  /** Who this text belongs to, for the reject file. */
  ref?: { id: string; user: string | null };
}

/** Result per input, in input order: a vector, or the reason the provider rejected it. */
export type EmbedResult = { vector: Float32Array } | { rejected: string };

export interface EmbeddingProvider {
  /** Model name as recorded in memories.embedding_model. */
  readonly model: string;
  readonly dimensions: number;
  embed(inputs: EmbedInput[], stats: EmbedStats, options?: EmbedCallOptions): Promise<EmbedResult[]>;
}

export interface EmbedCallOptions {
  /**
   * Called with each request's results as they come, before they are handed back and before
   * the request's slot is free again: the cache write, so that what was paid for is kept
   * even if the run dies before the rows are committed.
   */
  onResults?: (results: Array<{ index: number; result: EmbedResult }>) => Promise<void>;
}

/** A text's request was never sent: the run is stopping (an interrupt, or another failure). */
export class EmbedCancelled extends Error {
  constructor() {
    super('embedding cancelled: the run is stopping');
  }
}
