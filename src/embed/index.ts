// Building the embedder from command-line options, and the embedding API in one import.
import { UsageError } from '../errors.js';
import { LocalProvider } from './local-provider.js';
import { DEFAULT_OPENAI_MODEL, LOCAL_EMBEDDING_MODEL } from './models.js';
import { OpenAIProvider, type OpenAIProviderOptions } from './openai-provider.js';

/** The OpenAI provider's options, and which embedder to build. */
export interface CreateProviderOptions extends Omit<OpenAIProviderOptions, 'fetch'> {
  embedder: 'openai' | 'local';
}

/** Validates the options and builds the provider (UsageError, exit 2, for bad combinations). */
export function createProvider(opts: CreateProviderOptions): OpenAIProvider | LocalProvider {
  if (opts.embedder === 'local') {
    if (opts.model !== undefined && opts.model !== LOCAL_EMBEDDING_MODEL) {
      // Labelling hashed vectors with another model's name would poison the cache and mix
      // models in one column.
      throw new UsageError(
        `--embedder local computes ${LOCAL_EMBEDDING_MODEL} vectors; drop --model ${opts.model} or use --embedder openai`,
      );
    }
    return new LocalProvider({ ...(opts.dimensions !== undefined ? { dimensions: opts.dimensions } : {}) });
  }
  if (opts.embedder !== 'openai') {
    throw new UsageError(`--embedder must be openai or local, not "${String(opts.embedder)}"`);
  }
  const { embedder: _embedder, ...options } = opts;
  const env = process.env;
  return new OpenAIProvider({
    ...options,
    // Defaults from the environment: the key, and the base URL (an empty value means unset).
    apiKey: opts.apiKey ?? env['OPENAI_API_KEY'],
    baseURL: opts.baseURL || env['OPENAI_BASE_URL'] || undefined,
    model: opts.model ?? DEFAULT_OPENAI_MODEL,
  });
}

export * from './models.js';
export { countTokens, truncateToTokens } from './tokens.js';
export { planBatches, minRequests, DEFAULT_LIMITS, type BatchLimits } from './batching.js';
export { OpenAIProvider, type OpenAIProviderOptions, type EmbedProgress } from './openai-provider.js';
export { LocalProvider, LOCAL_MODEL, localEmbedding } from './local-provider.js';
export { EmbeddingCache, embeddingCacheKey, cacheKeyForText } from './cache.js';
export { EmbeddingService, type Preflight } from './service.js';
export * from './types.js';
