// `memory-migrate selftest`: the post-migration checks on their own, against a live target.
import { runSelftest } from '../selftest.js';
import type { Output } from '../output.js';
import { buildProvider, buildService, openTarget, resolveTarget, textEmbedder, type EmbedderFlags, type TargetFlags } from './shared.js';

export async function selftest(flags: TargetFlags & EmbedderFlags, out: Output): Promise<number> {
  const provider = buildProvider(flags);
  const db = await openTarget(resolveTarget(flags, out));
  try {
    const service = buildService(provider, db, false);
    const r = await runSelftest(db, textEmbedder(service, provider));
    if (out.json) {
      out.result({ ok: r.passed, selftest: { ran: true, passed: r.passed, checks: r.checks } });
    } else {
      for (const c of r.checks) out.info(`${c.ok ? '✅' : '❌'} ${c.name}${c.detail ? ` — ${c.detail}` : ''}`);
      out.info(r.passed ? '🎉 All memory system tests passed!' : '❌ Self-test failed');
    }
    return r.passed ? 0 : 1;
  } finally {
    await db.close();
  }
}
