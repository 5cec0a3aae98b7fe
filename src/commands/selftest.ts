// `memory-migrate selftest`: the post-migration checks on their own, against a live target.
import { Command } from 'commander';
import { runSelftest } from '../selftest.js';
import { formatCheck, type SelftestCheck } from '../report.js';
import type { CliCommand } from './command.js';
import {
  buildProvider,
  buildService,
  embedderOptions,
  examples,
  openTarget,
  outputOptions,
  resolveTarget,
  targetOptions,
  textEmbedder,
  type EmbedderFlags,
  type TargetFlags,
} from './shared.js';

export type SelftestFlags = TargetFlags & EmbedderFlags;

export interface SelftestReport {
  ok: boolean;
  selftest: { ran: true; passed: boolean; checks: SelftestCheck[] };
}

export const selftestCommand: CliCommand<SelftestFlags, SelftestReport> = {
  define() {
    const cmd = new Command('selftest').description('run the self-test against a migrated target');
    outputOptions(embedderOptions(targetOptions(cmd)));
    return examples(cmd, 'memory-migrate selftest --embedder local');
  },

  async run(flags, out) {
    const provider = buildProvider(flags);
    const db = await openTarget(resolveTarget(flags, out));
    try {
      const r = await runSelftest(db, textEmbedder(buildService(provider, db, false), provider));
      return { report: { ok: r.passed, selftest: { ran: true, passed: r.passed, checks: r.checks } }, exitCode: r.passed ? 0 : 1 };
    } finally {
      await db.close();
    }
  },

  render(r, out) {
    for (const c of r.selftest.checks) out.info(formatCheck(c));
    out.info(r.selftest.passed ? '🎉 All memory system tests passed!' : '❌ Self-test failed');
  },
};
