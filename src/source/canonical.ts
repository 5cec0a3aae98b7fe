// The canonical form of a memory's text, and the two hashes built on it.
//   contentHash: what the text is (used to prove nothing changed in transit).
//   dedupHash:   what the original app treated as "the same memory" (it compared LOWER(content)),
//                so it is case-folded; it must always be combined with user_id by the caller.
// sql/003_canonical_hash.sql computes both in PostgreSQL (for triggers): any change here must
// be made there too, and test/unit/postgres/canonical-sql.test.ts compares the two.
import crypto, { createHash } from 'node:crypto';

/** NFC, CRLF/CR -> LF, trailing whitespace trimmed per line, exactly one final newline. */
export function canonicalize(content: string): string {
  // contentHash and dedupHash are called on the same text one after the other: remember the
  // last answer (canonicalize is a pure function of the string).
  if (content === lastContent) return lastCanonical;
  const canonical = canonicalizeUncached(content);
  lastContent = content;
  lastCanonical = canonical;
  return canonical;
}

let lastContent: string | undefined;
let lastCanonical = '';

function canonicalizeUncached(content: string): string {
  const text = content.normalize('NFC');
  // Most texts have no CR and no whitespace at the end of a line: then the canonical form is
  // the text with its final newlines replaced by exactly one, and nothing needs splitting.
  const n = text.length;
  let prev = 10; // as if a newline came before the text
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 13) return canonicalizeLines(text);
    if (c === 10 && prev !== 10 && mayTrim(prev)) return canonicalizeLines(text);
    prev = c;
  }
  if (prev !== 10 && mayTrim(prev)) return canonicalizeLines(text);
  let end = n;
  while (end > 0 && text.charCodeAt(end - 1) === 10) end--;
  if (end === n) return text + '\n';
  if (end === n - 1) return text;
  return text.slice(0, end) + '\n';
}

/**
 * True for every UTF-16 code unit String.prototype.trimEnd may remove (ECMAScript WhiteSpace
 * and LineTerminator: TAB VT FF SP NBSP ZWNBSP, Unicode Zs, LF CR LS PS), and a few more to be
 * safe (all of C0, U+180E); a line ending in one of them takes the general path.
 */
function mayTrim(c: number): boolean {
  if (c <= 0x20) return true;
  if (c < 0xa0) return false;
  return (
    c === 0xa0 ||
    c === 0x1680 ||
    c === 0x180e ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

/** The general form of NFC text: split into lines, trim each, drop trailing empty lines. */
export function canonicalizeLines(text: string): string {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  for (let i = 0; i < lines.length; i++) lines[i] = lines[i]!.trimEnd();
  let end = lines.length;
  while (end > 0 && lines[end - 1] === '') end--;
  return lines.slice(0, end).join('\n') + '\n';
}

/** sha256 hex of the canonical form. */
export function contentHash(content: string): string {
  return sha256Hex(canonicalize(content));
}

/**
 * sha256 hex of the case-folded canonical form (exact-duplicate key, per user): toLowerCase,
 * then every final sigma 'ς' written as 'σ'. toLowerCase picks ς or σ for 'Σ' by looking at
 * the neighbouring letters (Final_Sigma), which SQL cannot reproduce character by character;
 * folding ς to σ (as Unicode case folding does) gives one definition both sides compute, and
 * makes "ΟΔΥΣΣΕΥΣ" and "οδυσσευσ" the same memory.
 */
export function dedupHash(content: string): string {
  const lower = canonicalize(content).toLowerCase();
  return sha256Hex(lower.indexOf('\u03c2') === -1 ? lower : lower.replaceAll('\u03c2', '\u03c3'));
}

// One-shot crypto.hash (Node >= 20.12) is about twice as fast as a Hash object for short
// texts; two hashes per row add up on large loads.
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;

function sha256Hex(text: string): string {
  if (oneShot) return oneShot('sha256', text, 'hex');
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
