// Pieces every command needs: the option groups several commands share (target, embedder,
// output), which target to open, which embedder to build, and the option parsing that turns
// flag strings into checked values (bad values are exit 2).
import { existsSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { DEFAULT_PGLITE_DIR, describeTarget, openDb, type Db, type TargetOptions } from '../postgres/connection.js';
import { registerSecret, registerUrlSecrets } from '../secrets.js';
import { UsageError } from '../errors.js';
import type { Output } from '../output.js';
import { createProvider } from '../embed/index.js';
import { EmbeddingService } from '../embed/service.js';
import { EmbeddingCache } from '../embed/cache.js';
import { emptyEmbedStats, type EmbeddingProvider } from '../embed/types.js';
import type { TextEmbedder } from '../store/types.js';
import { RunError } from '../errors.js';
import { DEFAULT_OPENAI_MODEL, LOCAL_EMBEDDING_MODEL } from '../embed/models.js';
import { DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES, OpenAIProvider } from '../embed/openai-provider.js';
import { verifyEmbeddingEndpoint } from '../embed/endpoint-check.js';
import { DEFAULT_MAX_INPUTS, DEFAULT_MAX_TOKENS } from '../embed/batching.js';
import type { LedgerRun } from '../postgres/ledger.js';

export interface TargetFlags {
  databaseUrl?: string;
  pgliteDir?: string;
  /** --connect-timeout, seconds (a real server only). */
  connectTimeout?: number;
}

export interface EmbedderFlags {
  embedder?: string;
  model?: string;
  dimensions?: number;
  concurrency?: number;
  maxRetries?: number;
  maxBatchInputs?: number;
  maxBatchTokens?: number;
  rejectFile?: string;
}

export interface OutputFlags {
  json?: boolean;
  quiet?: boolean;
}

// ---------------------------------------------------------------- option groups

/** Where the target is: --database-url, --pglite-dir, --connect-timeout. */
export function targetOptions(cmd: Command): Command {
  return cmd
    .option('--database-url <url>', 'PostgreSQL connection URL (default: $DATABASE_URL; neither = embedded PGlite)')
    .option('--pglite-dir <dir>', 'data directory of the embedded PGlite database', DEFAULT_PGLITE_DIR)
    .option('--connect-timeout <s>', 'seconds to wait for a PostgreSQL server to answer', parsePositiveInt('--connect-timeout'), 10);
}

/** Which embedder to build and how hard to drive it (migrate, selftest). */
export function embedderOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--embedder <kind>',
        `openai = any OpenAI-compatible API ($OPENAI_API_KEY, $OPENAI_BASE_URL); local = offline ${LOCAL_EMBEDDING_MODEL}, ` +
          'a deterministic hashing embedder that is LEXICAL, NOT SEMANTIC (for trials without a key)',
      )
        .choices(['openai', 'local'])
        .default('openai'),
    )
    .option('--model <name>', `embedding model (default: ${DEFAULT_OPENAI_MODEL} for openai, ${LOCAL_EMBEDDING_MODEL} for local)`)
    .option('--dimensions <n>', 'vector width (default: the model\'s own; text-embedding-3-* accept fewer)', parsePositiveInt('--dimensions'))
    .option('--concurrency <n>', 'most embedding requests in flight (requests are also paced to the API rate limit)', parsePositiveInt('--concurrency'), DEFAULT_CONCURRENCY)
    .option('--max-retries <n>', 'retries per embedding request on 408/409/5xx and network errors (429s for the rate limit are waited out)', parsePositiveInt('--max-retries', 0), DEFAULT_MAX_RETRIES)
    .option('--max-batch-inputs <n>', 'inputs per embedding request', parsePositiveInt('--max-batch-inputs'), DEFAULT_MAX_INPUTS)
    .option('--max-batch-tokens <n>', 'tokens per embedding request', parsePositiveInt('--max-batch-tokens'), DEFAULT_MAX_TOKENS);
}

/** --json and --quiet: every command has them, last in its list. */
export function outputOptions(cmd: Command): Command {
  return cmd
    .option('--json', 'print exactly one JSON object on stdout; logs go to stderr', false)
    .option('--quiet', 'print errors only', false);
}

/** The help examples, after the options. */
export function examples(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText('after', `\nExample${lines.length > 1 ? 's' : ''}:\n${lines.map((l) => `  ${l}`).join('\n')}`);
}

// ---------------------------------------------------------------- target and embedder

export function resolveTarget(flags: TargetFlags, out: Output): TargetOptions {
  const url = flags.databaseUrl ?? process.env['DATABASE_URL'];
  if (url) {
    registerUrlSecrets(url);
    return { databaseUrl: url, ...(flags.connectTimeout !== undefined ? { connectTimeout: flags.connectTimeout } : {}) };
  }
  const dir = flags.pgliteDir ?? DEFAULT_PGLITE_DIR;
  out.info(`No DATABASE_URL: using embedded PostgreSQL (PGlite with pgvector) in ${dir}`);
  return { pgliteDir: dir };
}

export async function openTarget(target: TargetOptions): Promise<Db> {
  return openDb(target);
}

/** True when a dry run can read the target without creating it. */
export function targetExists(target: TargetOptions): boolean {
  if (target.databaseUrl) return true;
  return existsSync(target.pgliteDir ?? DEFAULT_PGLITE_DIR);
}

export { describeTarget };

/** A bad key, base URL or model fails here, before anything is written (the local embedder has nothing to check). */
export async function checkEmbeddingEndpoint(provider: EmbeddingProvider): Promise<void> {
  if (!(provider instanceof OpenAIProvider)) return;
  await verifyEmbeddingEndpoint({
    baseURL: provider.baseURL,
    apiKey: process.env['OPENAI_API_KEY'] ?? '',
    model: provider.model,
    dimensions: provider.dimensions,
    sendDimensions: provider.sendDimensions,
  });
}

export function buildProvider(flags: EmbedderFlags): EmbeddingProvider {
  const embedder = flags.embedder ?? 'openai';
  if (embedder !== 'openai' && embedder !== 'local') {
    throw new UsageError(`--embedder must be openai or local, not "${embedder}"`);
  }
  registerSecret(process.env['OPENAI_API_KEY']);
  return createProvider({
    embedder,
    model: flags.model,
    dimensions: flags.dimensions,
    apiKey: process.env['OPENAI_API_KEY'],
    baseURL: process.env['OPENAI_BASE_URL'],
    concurrency: flags.concurrency,
    maxRetries: flags.maxRetries,
    maxInputs: flags.maxBatchInputs,
    maxTokens: flags.maxBatchTokens,
    rejectFile: flags.rejectFile,
  });
}

/** Embedder flags as given, else as the last committed run recorded them. */
export function embedderFromRun(
  flags: { embedder?: string; model?: string; dimensions?: number },
  run: LedgerRun | null,
): { embedder: string; model: string | undefined; dimensions: number | undefined; fromLedger: boolean } {
  if (flags.embedder !== undefined || flags.model !== undefined || !run) {
    const embedder = flags.embedder ?? (flags.model === LOCAL_EMBEDDING_MODEL ? 'local' : 'openai');
    return { embedder, model: flags.model, dimensions: flags.dimensions, fromLedger: false };
  }
  const o = run.options;
  return {
    embedder: typeof o['embedder'] === 'string' ? (o['embedder'] as string) : 'openai',
    model: typeof o['model'] === 'string' ? (o['model'] as string) : undefined,
    dimensions: flags.dimensions ?? (typeof o['dimensions'] === 'number' ? (o['dimensions'] as number) : undefined),
    fromLedger: true,
  };
}

export function buildService(provider: EmbeddingProvider, db: Db | null, dryRun: boolean): EmbeddingService {
  const cache = new EmbeddingCache({ ...(db ? { db } : {}), dryRun });
  return new EmbeddingService({ provider, cache, stats: emptyEmbedStats() });
}

/** The service as the plain text embedder the memory store wants. */
export function textEmbedder(service: EmbeddingService, provider: EmbeddingProvider): TextEmbedder {
  return {
    model: provider.model,
    dimensions: provider.dimensions,
    async embed(texts: string[]) {
      const results = await service.embedTexts(texts.map((text) => ({ text })));
      return results.map((r) => {
        if ('vector' in r) return r.vector;
        throw new RunError(`the embedding API rejected a text: ${r.rejected}`);
      });
    },
  };
}

// ---------------------------------------------------------------- flag parsing

export function parsePositiveInt(name: string, min = 1) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} must be a whole number ≥ ${min}, not "${value}"`);
    return n;
  };
}

export function parseFraction(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0 || n > 1) throw new UsageError(`${name} must be a number in (0, 1], not "${value}"`);
    return n;
  };
}

export function parsePositiveNumber(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name} must be a number > 0 (seconds; fractions allowed), not "${value}"`);
    return n;
  };
}

export function parseShard(value: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(value);
  const index = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || count < 1 || index >= count) {
    throw new UsageError(`--shard must be K/N with 0 ≤ K < N, e.g. --shard 0/3, not "${value}"`);
  }
  return { index, count };
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
