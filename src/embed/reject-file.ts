// The --reject-file: JSON Lines {"id","user","reason"}, one line per input the embedding API
// refused and per row PostgreSQL cannot store, so operators find both in one place. The
// embedding provider and the pipeline both append through here: appends to one file are
// queued one after another, each a single write of whole lines, so lines never interleave.
import { appendFile } from 'node:fs/promises';
import { redact } from '../secrets.js';

export interface RejectLine {
  id: string | null;
  user: string | null;
  reason: string;
}

const queues = new Map<string, Promise<void>>();

/** Appends `lines` to `file` once every append queued before has finished. */
export function appendRejects(file: string, lines: RejectLine[]): Promise<void> {
  const text = lines.map((l) => JSON.stringify({ id: l.id, user: l.user, reason: redact(l.reason) }) + '\n').join('');
  // A failed append fails its own caller, not the appends queued after it.
  const next = (queues.get(file) ?? Promise.resolve()).catch(() => {}).then(() => appendFile(file, text, 'utf8'));
  queues.set(file, next);
  return next;
}
