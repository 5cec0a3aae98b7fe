#!/usr/bin/env node
// Argument parsing only: each command's work lives in src/commands/. Exit codes: 0 success,
// 1 run-time failure or failed self-test, 2 bad usage or input, 3 verify mismatch, 130
// interrupted.
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { createOutput, type Output } from './output.js';
import { UsageError, errorMessage, oneLine } from './errors.js';
import { redact, registerProcessSecrets } from './secrets.js';
import { DEFAULT_PGLITE_DIR } from './postgres/connection.js';
import { DEFAULT_OPENAI_MODEL, LOCAL_EMBEDDING_MODEL } from './embed/models.js';
import { collect, parseFraction, parsePositiveInt, parseShard } from './commands/shared.js';
import { migrate, printMigrateReport } from './commands/migrate.js';
import { schema } from './commands/schema.js';
import { selftest } from './commands/selftest.js';
import { status } from './commands/status.js';
import { verify, printVerifyReport, DEFAULT_SAMPLE } from './commands/verify.js';
import { rollback, printRollbackReport } from './commands/rollback.js';
import { search, printSearchReport } from './commands/search.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function targetOptions(cmd: Command): Command {
  return cmd
    .option('--database-url <url>', 'PostgreSQL connection URL (default: $DATABASE_URL; neither = embedded PGlite)')
    .option('--pglite-dir <dir>', 'data directory of the embedded PGlite database', DEFAULT_PGLITE_DIR)
    .option('--connect-timeout <s>', 'seconds to wait for a PostgreSQL server to answer', parsePositiveInt('--connect-timeout'), 10);
}

function embedderOptions(cmd: Command): Command {
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
    .option('--concurrency <n>', 'embedding requests in flight', parsePositiveInt('--concurrency'), 4)
    .option('--max-retries <n>', 'retries per embedding request on 408/409/429/5xx', parsePositiveInt('--max-retries', 0), 6)
    .option('--max-batch-inputs <n>', 'inputs per embedding request', parsePositiveInt('--max-batch-inputs'), 2048)
    .option('--max-batch-tokens <n>', 'tokens per embedding request', parsePositiveInt('--max-batch-tokens'), 300000);
}

function outputOptions(cmd: Command): Command {
  return cmd
    .option('--json', 'print exactly one JSON object on stdout; logs go to stderr', false)
    .option('--quiet', 'print errors only', false);
}

/** The running command's output: a failure still prints its one JSON object with --json. */
let activeOut: Output | null = null;

function outputFor(opts: { json?: boolean; quiet?: boolean }): Output {
  activeOut = createOutput({ json: opts.json, quiet: opts.quiet });
  return activeOut;
}

export function buildProgram(): Command {
  const program = new Command('memory-migrate')
    .description(
      "Move an AI agent's long-term memory from a SQLite file into PostgreSQL with pgvector, and prove nothing was lost.\n" +
        'With no --database-url and no $DATABASE_URL it uses an embedded PostgreSQL (PGlite with pgvector).',
    )
    .version(pkg.version, '--version')
    .showHelpAfterError('(run with --help for usage)')
    // Commander's own messages (help, bad arguments) pass through redact() too; subcommands
    // inherit this.
    .configureOutput({
      writeOut: (str) => process.stdout.write(redact(str)),
      writeErr: (str) => process.stderr.write(redact(str)),
    })
    .exitOverride();

  const migrateCmd = program
    .command('migrate')
    .description('migrate a SQLite memory file into PostgreSQL: schema, rows, embeddings, indexes, self-test')
    .requiredOption('--sqlite <file>', 'the SQLite memory file, opened read-only, never changed (required, no default)');
  targetOptions(migrateCmd);
  embedderOptions(migrateCmd);
  migrateCmd
    .option(
      '--source-model <name>',
      'model that produced the vectors stored in SQLite; equal to --model = reuse them, no API calls (default: none, so stored vectors are not reused)',
    )
    .option('--force-recreate', 'move existing tables to a backup schema memory_backup_<UTC time>, then rebuild', false)
    .option('--no-backup', 'with --force-recreate: really DROP the existing tables instead of backing them up (default: back up)')
    .option('--skip-test', 'do not run the self-test after loading (CI)', false)
    .option('--dry-run', 'read everything, write nothing; report counts, tokens, requests, cost and ETA', false)
    .option('--limit <n>', 'process at most N source rows (default: every row)', parsePositiveInt('--limit'))
    .addOption(new Option('--user <id>', 'only this user (repeatable)').argParser(collect).default([], 'every user'))
    .option('--shard <K/N>', 'only users with hash(user_id) mod N = K, for N parallel workers (default: no sharding)', parseShard)
    .addOption(
      new Option('--dedup <mode>', 'duplicate detection: exact (always), fuzzy adds word-set Jaccard, semantic adds cosine similarity (pgvector)')
        .choices(['exact', 'fuzzy', 'semantic'])
        .default('exact'),
    )
    .option('--dedup-threshold <x>', 'fuzzy: Jaccard threshold (default 0.9); semantic: cosine similarity (default 0.85)', parseFraction('--dedup-threshold'))
    .option('--dedup-skip', 'fuzzy/semantic: do not store matches (default: store and record them)', false)
    .option('--batch-size <n>', 'rows per committed batch', parsePositiveInt('--batch-size'), 1000)
    .option('--reject-file <file>', 'JSON Lines file for inputs the embedding API refused (id, user, reason)', 'memory-migrate-rejects.jsonl')
    .option('--busy-timeout <ms>', 'ms to wait while another process holds a write lock on the SQLite file', parsePositiveInt('--busy-timeout', 0), 5000)
    .option('--report <file>', 'also write the full JSON report, with every skipped and rejected row, to this file (default: none)');
  migrateCmd.option('--rollback', 'instead of migrating: roll back to SQLite (same as `memory-migrate rollback`; writes to --sqlite)', false);
  outputOptions(migrateCmd);
  migrateCmd.addHelpText(
    'after',
    `
Examples:
  memory-migrate migrate --sqlite fixtures/espressobot_memory.db --embedder local
  DATABASE_URL=postgres://app:***@db.internal:5432/agent memory-migrate migrate --sqlite memory.db \\
      --model text-embedding-3-small --source-model text-embedding-3-small --skip-test --json`,
  );
  migrateCmd.action(async (opts) => {
    const out = outputFor(opts);
    if (opts.rollback) {
      const rb = await rollback(opts, out);
      printRollbackReport(rb.report, out);
      process.exitCode = rb.exitCode;
      return;
    }
    const { report, exitCode } = await migrate(
      {
        ...opts,
        user: opts.user,
        backup: opts.backup,
      },
      out,
    );
    printMigrateReport(report, out);
    process.exitCode = exitCode;
  });

  const schemaCmd = program
    .command('schema')
    .description('install the target schema (tables, btree indexes, triggers) without migrating rows');
  targetOptions(schemaCmd);
  schemaCmd
    .option('--embedder <kind>', 'openai or local: picks the default model, hence the vector width', 'openai')
    .option('--model <name>', `embedding model whose width the vector columns get (default: ${DEFAULT_OPENAI_MODEL})`)
    .option('--dimensions <n>', "vector width override (default: the model's own)", parsePositiveInt('--dimensions'))
    .option('--force-recreate', 'move existing tables to a backup schema first', false)
    .option('--no-backup', 'with --force-recreate: DROP instead of backing up (default: back up)');
  outputOptions(schemaCmd);
  schemaCmd.addHelpText('after', '\nExample:\n  memory-migrate schema --database-url postgres://app:***@localhost:5432/agent --model text-embedding-3-large');
  schemaCmd.action(async (opts) => {
    process.exitCode = await schema(opts, outputFor(opts));
  });

  const selftestCmd = program.command('selftest').description('run the self-test against a migrated target');
  targetOptions(selftestCmd);
  embedderOptions(selftestCmd);
  outputOptions(selftestCmd);
  selftestCmd.addHelpText('after', '\nExample:\n  memory-migrate selftest --embedder local');
  selftestCmd.action(async (opts) => {
    process.exitCode = await selftest(opts, outputFor(opts));
  });

  const statusCmd = program.command('status').description('list migration runs from the ledger (migration_runs)');
  targetOptions(statusCmd);
  statusCmd.option('--verify-ledger', 'recompute each run\'s HMAC with $MEMORY_EVENTS_HMAC_SECRET and flag tampering', false);
  outputOptions(statusCmd);
  statusCmd.addHelpText('after', '\nExample:\n  MEMORY_EVENTS_HMAC_SECRET=... memory-migrate status --verify-ledger');
  statusCmd.action(async (opts) => {
    process.exitCode = await status(opts, outputFor(opts));
  });

  const verifyCmd = program
    .command('verify')
    .description('prove parity: per-user counts, a seeded sample compared field by field, index recall, fragments (exit 3 on any mismatch)')
    .requiredOption('--sqlite <file>', 'the SQLite memory file that was migrated, opened read-only (required, no default)');
  targetOptions(verifyCmd);
  verifyCmd
    .option('--sample <n>', `rows compared field by field (default ${DEFAULT_SAMPLE})`, parsePositiveInt('--sample'))
    .option('--seed <n>', 'seed of the sample, to repeat a run exactly (default: random, printed)', parsePositiveInt('--seed', 0))
    .option('--source-model <name>', 'model of the vectors stored in SQLite: reused vectors must equal them bit for bit (default: as migrate recorded)')
    .addOption(new Option('--embedder <kind>', 'embedder the migration used (default: as migrate recorded)').choices(['openai', 'local']))
    .option('--model <name>', 'model the stored vectors must have (default: as migrate recorded)')
    .option('--dimensions <n>', 'width the stored vectors must have (default: the model\'s)', parsePositiveInt('--dimensions'));
  outputOptions(verifyCmd);
  verifyCmd.addHelpText('after', '\nExamples:\n  memory-migrate verify --sqlite memory.db\n  memory-migrate verify --sqlite memory.db --sample 1000 --seed 42 --json');
  verifyCmd.action(async (opts) => {
    const out = outputFor(opts);
    const { report, exitCode } = await verify(opts, out);
    printVerifyReport(report, out);
    process.exitCode = exitCode;
  });

  const rollbackCmd = program
    .command('rollback')
    .description('write memories added or changed in Postgres back into the SQLite file (after a backup copy), for MEMORY_TYPE=sqlite')
    .requiredOption('--sqlite <file>', 'the SQLite memory file to write back into, copied to <file>.bak-<UTC time> first (required, no default)');
  targetOptions(rollbackCmd);
  rollbackCmd.option('--dry-run', 'list what would be written back; write nothing, make no backup', false);
  outputOptions(rollbackCmd);
  rollbackCmd.addHelpText('after', '\nExamples:\n  memory-migrate rollback --sqlite memory.db --dry-run\n  memory-migrate rollback --sqlite memory.db && export MEMORY_TYPE=sqlite');
  rollbackCmd.action(async (opts) => {
    const out = outputFor(opts);
    const { report, exitCode } = await rollback(opts, out);
    printRollbackReport(report, out);
    process.exitCode = exitCode;
  });

  const searchCmd = program
    .command('search')
    .description("spot-check: a user's best memories for a query, with cosine similarity")
    .argument('<query>', 'text to search for')
    .requiredOption('--user <id>', 'whose memories to search (required, no default)');
  targetOptions(searchCmd);
  searchCmd
    .option('--limit <k>', 'how many memories (default 5)', parsePositiveInt('--limit'))
    .addOption(new Option('--embedder <kind>', 'embedder for the query (default: the one the migration recorded)').choices(['openai', 'local']))
    .option('--model <name>', 'embedding model (default: the one the migration recorded)')
    .option('--dimensions <n>', "vector width (default: the model's own)", parsePositiveInt('--dimensions'));
  outputOptions(searchCmd);
  searchCmd.addHelpText('after', '\nExample:\n  memory-migrate search "oat milk flat white" --user user_1 --limit 3');
  searchCmd.action(async (query: string, opts) => {
    const out = outputFor(opts);
    const { report, exitCode } = await search({ ...opts, query }, out);
    printSearchReport(report, out);
    process.exitCode = exitCode;
  });

  // --help lists every flag with its default; a flag without one that must be given says so.
  for (const cmd of program.commands) {
    for (const o of cmd.options) {
      if (o.mandatory && !/\brequired\b/.test(o.description)) o.description += ' (required)';
    }
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // Before anything can print: every URL password and key this process can see.
  registerProcessSecrets(argv);
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      // Commander already printed its one-line message.
      return 2;
    }
    const code = (err as { exitCode?: number }).exitCode;
    const exitCode = err instanceof UsageError ? 2 : typeof code === 'number' ? code : 1;
    const out = activeOut ?? createOutput();
    // One line naming the problem and the fix; the stack only with DEBUG=memory-migrate.
    const message = redact(oneLine(errorMessage(err)));
    if (out.json) out.result((err as { report?: unknown }).report ?? { ok: false, error: message, exitCode });
    out.error(`memory-migrate: ${message}`);
    if (process.env['DEBUG']?.includes('memory-migrate') && err instanceof Error && err.stack) out.error(redact(err.stack));
    return exitCode;
  }
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`memory-migrate: ${redact(errorMessage(err))}\n`);
    process.exitCode = 1;
  },
);
