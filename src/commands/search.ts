// `memory-migrate search <query> --user <id>`: the operator's spot-check after a migration. It
// searches through the same PostgresMemoryStore an app uses (so through the ivfflat index,
// and the search is logged to memory_analytics like any other) and prints the best memories
// with their cosine similarity. Without embedder flags it uses the embedder the last
// committed migration recorded, so the query is embedded with the model of the stored vectors.
import { Command, Option } from 'commander';
import { PostgresMemoryStore } from '../store/postgres-store.js';
import type { SearchHit } from '../store/types.js';
import { UsageError } from '../errors.js';
import { tableDimensions } from '../postgres/schema.js';
import { lastCommittedRun } from '../postgres/ledger.js';
import type { CliCommand } from './command.js';
import {
  buildProvider,
  buildService,
  describeTarget,
  embedderFromRun,
  examples,
  openTarget,
  outputOptions,
  parsePositiveInt,
  resolveTarget,
  targetExists,
  targetOptions,
  textEmbedder,
  type EmbedderFlags,
  type TargetFlags,
} from './shared.js';

/** Memories listed without --limit. */
export const DEFAULT_SEARCH_LIMIT = 5;

export interface SearchFlags extends TargetFlags, EmbedderFlags {
  query: string;
  user: string;
  limit?: number;
  json?: boolean;
}

export interface SearchReport {
  ok: boolean;
  command: 'search';
  target: string;
  query: string;
  user: string;
  model: string;
  dimensions: number;
  hits: { rank: number; id: string; similarity: number; content: string; metadata: Record<string, unknown>; createdAt: string }[];
}

export const searchCommand: CliCommand<SearchFlags, SearchReport> = {
  define() {
    const cmd = new Command('search')
      .description("spot-check: a user's best memories for a query, with cosine similarity")
      .argument('<query>', 'text to search for')
      .requiredOption('--user <id>', 'whose memories to search (required, no default)');
    targetOptions(cmd)
      .option('--limit <k>', `how many memories (default ${DEFAULT_SEARCH_LIMIT})`, parsePositiveInt('--limit'))
      .addOption(new Option('--embedder <kind>', 'embedder for the query (default: the one the migration recorded)').choices(['openai', 'local']))
      .option('--model <name>', 'embedding model (default: the one the migration recorded)')
      .option('--dimensions <n>', "vector width (default: the model's own)", parsePositiveInt('--dimensions'));
    outputOptions(cmd);
    return examples(cmd, 'memory-migrate search "oat milk flat white" --user user_1 --limit 3');
  },

  flags: (opts, [query]) => ({ ...(opts as Omit<SearchFlags, 'query'>), query: query as string }),

  async run(flags, out) {
    if (flags.query.trim() === '') throw new UsageError('the search query is empty: pass the text to search for');
    if (flags.user.trim() === '') throw new UsageError('--user is empty: pass the user id whose memories to search');
    const target = resolveTarget(flags, out);
    if (!targetExists(target)) {
      throw new UsageError(`${describeTarget(target)} does not exist: run memory-migrate migrate first, or pass the --pglite-dir / --database-url it used`);
    }
    const db = await openTarget(target);
    try {
      if ((await tableDimensions(db, 'memories')) === null) {
        throw new UsageError(`${describeTarget(target)} has no memories table: run memory-migrate migrate first`);
      }
      const emb = embedderFromRun(flags, await lastCommittedRun(db));
      const provider = buildProvider({ ...flags, embedder: emb.embedder, model: emb.model, dimensions: emb.dimensions });
      if (emb.fromLedger) out.info(`Embedding the query with ${provider.model} (${provider.dimensions} dimensions), as the migration did`);
      const store = await PostgresMemoryStore.open(db, textEmbedder(buildService(provider, db, false), provider));
      const hits: SearchHit[] = await store.search(flags.query, flags.user, flags.limit ?? DEFAULT_SEARCH_LIMIT);
      const report: SearchReport = {
        ok: true,
        command: 'search',
        target: describeTarget(target),
        query: flags.query,
        user: flags.user,
        model: provider.model,
        dimensions: provider.dimensions,
        hits: hits.map((h, i) => ({
          rank: i + 1,
          id: h.id,
          similarity: h.similarity,
          content: h.content,
          metadata: h.metadata,
          createdAt: h.createdAt.toISOString(),
        })),
      };
      return { report, exitCode: 0 };
    } finally {
      await db.close();
    }
  },

  render(r, out) {
    if (r.hits.length === 0) {
      out.info(`No memories for user ${r.user} in ${r.target}.`);
      return;
    }
    out.info(`Top ${r.hits.length} memories of ${r.user} for ${JSON.stringify(r.query)} (${r.model}):`);
    for (const h of r.hits) {
      const one = h.content.replace(/\s+/g, ' ').trim();
      const text = one.length > 160 ? `${one.slice(0, 160)}…` : one;
      out.info(`${String(h.rank).padStart(3)}. ${h.similarity.toFixed(4)}  ${h.id}  ${h.createdAt.slice(0, 10)}  ${text}`);
    }
  },
};
