// `memory-migrate status`: the migration ledger, newest run first; --verify-ledger checks
// each row's HMAC against MEMORY_EVENTS_HMAC_SECRET.
import { listRuns, verifyLedger } from '../postgres/ledger.js';
import { existingTables } from '../postgres/schema.js';
import type { Output } from '../output.js';
import { UsageError } from '../errors.js';
import { openTarget, resolveTarget, type TargetFlags } from './shared.js';

export async function status(flags: TargetFlags & { verifyLedger?: boolean }, out: Output): Promise<number> {
  const db = await openTarget(resolveTarget(flags, out));
  try {
    if ((await existingTables(db, ['migration_runs'])).length === 0) {
      if (out.json) out.result({ ok: true, runs: [] });
      else out.info('No migration has run against this target yet.');
      return 0;
    }
    const runs = await listRuns(db);
    let checks: { id: number; ok: boolean; reason?: string }[] = [];
    if (flags.verifyLedger) {
      const secret = process.env['MEMORY_EVENTS_HMAC_SECRET'];
      if (!secret) throw new UsageError('--verify-ledger needs MEMORY_EVENTS_HMAC_SECRET: set it to the secret the runs were written with');
      checks = await verifyLedger(db, secret);
    }
    const tampered = checks.filter((c) => !c.ok);
    if (out.json) {
      out.result({ ok: tampered.length === 0, runs, ledger: flags.verifyLedger ? checks : undefined });
    } else {
      for (const r of runs) {
        const c = (r.counts ?? {}) as { memories?: { migrated?: number; updated?: number; unchanged?: number } };
        out.info(
          `#${r.id} ${r.status.padEnd(11)} ${new Date(r.started_at).toISOString()} shard ${r.shard ?? '-'} ` +
            `checkpoint ${r.checkpoint_rowid ?? '-'} migrated ${c.memories?.migrated ?? 0} updated ${c.memories?.updated ?? 0} ` +
            `unchanged ${c.memories?.unchanged ?? 0}${r.error ? ` error: ${r.error}` : ''}`,
        );
      }
      if (flags.verifyLedger) {
        if (tampered.length === 0) out.info(`✅ ledger verified: ${checks.length} runs, every HMAC matches`);
        for (const t of tampered) out.error(`❌ run #${t.id}: ${t.reason}`);
      }
    }
    return tampered.length === 0 ? 0 : 3;
  } finally {
    await db.close();
  }
}
