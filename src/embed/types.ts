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
}

export function emptyEmbedStats(): EmbedStats {
  return { reused: 0, cached: 0, computed: 0, requests: 0, retries: 0, tokens: 0, truncated: 0, rejected: 0 };
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
  embed(inputs: EmbedInput[], stats: EmbedStats): Promise<EmbedResult[]>;
}
