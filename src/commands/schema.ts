// `memory-migrate schema`: install (or, with --force-recreate, back up and rebuild) the
// target schema without migrating anything.
import { Command } from 'commander';
import { installSchema } from '../postgres/schema.js';
import { DEFAULT_OPENAI_MODEL, LOCAL_EMBEDDING_MODEL, resolveDimensions } from '../embed/models.js';
import type { CliCommand } from './command.js';
import { examples, openTarget, outputOptions, parsePositiveInt, resolveTarget, targetOptions, type EmbedderFlags, type TargetFlags } from './shared.js';

export interface SchemaFlags extends TargetFlags, EmbedderFlags {
  forceRecreate?: boolean;
  backup?: boolean;
}

export interface SchemaReport {
  ok: boolean;
  dimensions: number;
  backupSchema: string | null;
  dropped: string[];
}

export const schemaCommand: CliCommand<SchemaFlags, SchemaReport> = {
  define() {
    const cmd = new Command('schema').description('install the target schema (tables, btree indexes, triggers) without migrating rows');
    targetOptions(cmd)
      .option('--embedder <kind>', 'openai or local: picks the default model, hence the vector width', 'openai')
      .option('--model <name>', `embedding model whose width the vector columns get (default: ${DEFAULT_OPENAI_MODEL})`)
      .option('--dimensions <n>', "vector width override (default: the model's own)", parsePositiveInt('--dimensions'))
      .option('--force-recreate', 'move existing tables to a backup schema first', false)
      .option('--no-backup', 'with --force-recreate: DROP instead of backing up (default: back up)');
    outputOptions(cmd);
    return examples(cmd, 'memory-migrate schema --database-url postgres://app:***@localhost:5432/agent --model text-embedding-3-large');
  },

  async run(flags, out) {
    // The vector width comes from the model, as in migrate; no API key is needed for that.
    const model = flags.model ?? (flags.embedder === 'local' ? LOCAL_EMBEDDING_MODEL : DEFAULT_OPENAI_MODEL);
    const dimensions = resolveDimensions(model, flags.dimensions).dimensions;
    const db = await openTarget(resolveTarget(flags, out));
    try {
      const r = await installSchema(db, {
        dimensions,
        forceRecreate: flags.forceRecreate,
        backup: flags.backup !== false,
        log: (l) => out.info(l),
      });
      if (r.backupSchema) out.info(`Existing tables moved to backup schema ${r.backupSchema}`);
      return { report: { ok: true, dimensions, backupSchema: r.backupSchema, dropped: r.droppedTables }, exitCode: 0 };
    } finally {
      await db.close();
    }
  },

  render(r, out) {
    out.info(`✅ Schema installed (${r.dimensions}-dimension vectors)`);
  },
};
