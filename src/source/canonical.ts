// The canonical form of a memory's text, and the two hashes built on it.
//   contentHash: what the text is (used to prove nothing changed in transit).
//   dedupHash:   what the original app treated as "the same memory" (it compared LOWER(content)),
//                so it is case-folded; it must always be combined with user_id by the caller.
import crypto, { createHash } from 'node:crypto';

/** NFC, CRLF/CR -> LF, trailing whitespace trimmed per line, exactly one final newline. */
export function canonicalize(content: string): string {
  const lines = content.normalize('NFC').replace(/\r\n?/g, '\n').split('\n');
  for (let i = 0; i < lines.length; i++) lines[i] = lines[i]!.trimEnd();
  let end = lines.length;
  while (end > 0 && lines[end - 1] === '') end--;
  return lines.slice(0, end).join('\n') + '\n';
}

/** sha256 hex of the canonical form. */
export function contentHash(content: string): string {
  return sha256Hex(canonicalize(content));
}

/** sha256 hex of the case-folded canonical form (exact-duplicate key, per user). */
export function dedupHash(content: string): string {
  return sha256Hex(canonicalize(content).toLowerCase());
}

// One-shot crypto.hash (Node >= 20.12) is about twice as fast as a Hash object for short
// texts; two hashes per row add up on large loads.
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;

function sha256Hex(text: string): string {
  if (oneShot) return oneShot('sha256', text, 'hex');
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
