// Fragments: the system_prompts rows in scope against prompt_fragments, counted and compared
// byte for byte.
import type { SourceFile } from '../source/reader.js';
import { SYSTEM_PROMPTS_USER } from '../source/rules.js';
import type { Db } from '../postgres/connection.js';
import type { RecordMismatch, VerifyReport } from './report.js';
import { describeTextDiff } from './sample.js';

export async function checkFragments(
  db: Db,
  source: SourceFile,
  found: Set<string>,
  missing: number,
  /** Fragments an app added since the migration: listed by reconcile, not compared here. */
  added: number,
  report: VerifyReport,
  mismatch: RecordMismatch,
): Promise<void> {
  const target = await db.query<{ id: string; content: string }>(`SELECT id, content FROM prompt_fragments WHERE id NOT LIKE 'default:%'`);
  const byId = new Map(target.map((t) => [t.id, t.content]));
  report.fragments.target = target.length - added;
  report.fragments.source = found.size + missing;
  if (report.fragments.source !== report.fragments.target) {
    mismatch({
      id: null,
      user: SYSTEM_PROMPTS_USER,
      check: 'fragment',
      detail: `${report.fragments.source} fragments in SQLite (system_prompts rows, not skipped, in scope), ${report.fragments.target} migrated fragments in Postgres`,
    });
  }
  if (found.size === 0) return;
  for (const row of source.rows({ users: [SYSTEM_PROMPTS_USER] })) {
    if (!found.has(row.id)) continue;
    const content = byId.get(row.id);
    report.fragments.checked++;
    if (content === undefined || !Buffer.from(content, 'utf8').equals(Buffer.from(row.content, 'utf8'))) {
      mismatch({
        id: row.id,
        user: SYSTEM_PROMPTS_USER,
        check: 'fragment',
        detail: content === undefined ? 'fragment not in prompt_fragments' : `fragment content ${describeTextDiff(row.content, content)}`,
      });
    }
  }
}
