// `memory-migrate status`: the migration ledger, newest run first; --verify-ledger checks
// each row's HMAC against MEMORY_EVENTS_HMAC_SECRET.
import { Command } from 'commander';
import { listRuns, verifyLedger, type LedgerCheck, type RunRow } from '../postgres/ledger.js';
import { existingTables } from '../postgres/schema.js';
import { UsageError } from '../errors.js';
import type { CliCommand } from './command.js';
import { examples, openTarget, outputOptions, resolveTarget, targetOptions, type TargetFlags } from './shared.js';

/** Exit code of a ledger with a row whose HMAC does not match. */
const EXIT_TAMPERED = 3;

export interface StatusFlags extends TargetFlags {
  verifyLedger?: boolean;
}

export interface StatusReport {
  ok: boolean;
  runs: RunRow[];
  /** With --verify-ledger: each run's HMAC check. */
  ledger?: LedgerCheck[];
  /** False when the target has no ledger table yet (not part of the --json object). */
  hasLedger: boolean;
}

export const statusCommand: CliCommand<StatusFlags, StatusReport> = {
  define() {
    const cmd = new Command('status').description('list migration runs from the ledger (migration_runs)');
    targetOptions(cmd).option('--verify-ledger', "recompute each run's HMAC with $MEMORY_EVENTS_HMAC_SECRET and flag tampering", false);
    outputOptions(cmd);
    return examples(cmd, 'MEMORY_EVENTS_HMAC_SECRET=... memory-migrate status --verify-ledger');
  },

  async run(flags, out) {
    const db = await openTarget(resolveTarget(flags, out));
    try {
      if ((await existingTables(db, ['migration_runs'])).length === 0) {
        return { report: { ok: true, runs: [], hasLedger: false }, exitCode: 0 };
      }
      const runs = await listRuns(db);
      let ledger: LedgerCheck[] | undefined;
      if (flags.verifyLedger) {
        const secret = process.env['MEMORY_EVENTS_HMAC_SECRET'];
        if (!secret) throw new UsageError('--verify-ledger needs MEMORY_EVENTS_HMAC_SECRET: set it to the secret the runs were written with');
        ledger = await verifyLedger(db, secret);
      }
      const ok = !ledger?.some((c) => !c.ok);
      return { report: { ok, runs, ledger, hasLedger: true }, exitCode: ok ? 0 : EXIT_TAMPERED };
    } finally {
      await db.close();
    }
  },

  json: (r) => (r.hasLedger ? { ok: r.ok, runs: r.runs, ledger: r.ledger } : { ok: r.ok, runs: r.runs }),

  render(r, out) {
    if (!r.hasLedger) {
      out.info('No migration has run against this target yet.');
      return;
    }
    for (const run of r.runs) {
      const c = (run.counts ?? {}) as { memories?: { migrated?: number; updated?: number; unchanged?: number } };
      out.info(
        `#${run.id} ${run.status.padEnd(11)} ${new Date(run.started_at).toISOString()} shard ${run.shard ?? '-'} ` +
          `checkpoint ${run.checkpoint_rowid ?? '-'} migrated ${c.memories?.migrated ?? 0} updated ${c.memories?.updated ?? 0} ` +
          `unchanged ${c.memories?.unchanged ?? 0}${run.error ? ` error: ${run.error}` : ''}`,
      );
    }
    if (!r.ledger) return;
    const tampered = r.ledger.filter((c) => !c.ok);
    if (tampered.length === 0) out.info(`✅ ledger verified: ${r.ledger.length} runs, every HMAC matches`);
    for (const t of tampered) out.error(`❌ run #${t.id}: ${t.reason}`);
  },
};
