// `memory-migrate schema`: install (or, with --force-recreate, back up and rebuild) the
// target schema without migrating anything.
import { installSchema } from '../postgres/schema.js';
import type { Output } from '../output.js';
import { DEFAULT_OPENAI_MODEL, LOCAL_EMBEDDING_MODEL, resolveDimensions } from '../embed/models.js';
import { openTarget, resolveTarget, type EmbedderFlags, type TargetFlags } from './shared.js';

export interface SchemaFlags extends TargetFlags, EmbedderFlags {
  forceRecreate?: boolean;
  backup?: boolean;
}

export async function schema(flags: SchemaFlags, out: Output): Promise<number> {
  // The vector width comes from the model, as in migrate; no API key is needed for that.
  const model = flags.model ?? (flags.embedder === 'local' ? LOCAL_EMBEDDING_MODEL : DEFAULT_OPENAI_MODEL);
  const provider = { dimensions: resolveDimensions(model, flags.dimensions).dimensions };
  const db = await openTarget(resolveTarget(flags, out));
  try {
    const r = await installSchema(db, {
      dimensions: provider.dimensions,
      forceRecreate: flags.forceRecreate,
      backup: flags.backup !== false,
      log: (l) => out.info(l),
    });
    if (r.backupSchema) out.info(`Existing tables moved to backup schema ${r.backupSchema}`);
    if (out.json) out.result({ ok: true, dimensions: provider.dimensions, backupSchema: r.backupSchema, dropped: r.droppedTables });
    else out.info(`✅ Schema installed (${provider.dimensions}-dimension vectors)`);
    return 0;
  } finally {
    await db.close();
  }
}
