// How a source user becomes a memory-plugin v1 namespace. Shared by `migrate --to-plugin`
// (src/plugin-client/) and `serve` (src/plugin-server/): both must derive the same name for
// the same user, or the backfilled memories would land where serve never looks.
//
// The template (default `workspace:{user}`) contains `{user}` exactly once; the rendered name
// must match the contract's pattern ^[a-z]+:[A-Za-z0-9_:.\-]+$ and be at most 256 characters.
//
// The escape. A user id may hold any character, the name body only [A-Za-z0-9_:.-], so:
//   - every UTF-8 byte of a character outside [A-Za-z0-9_:.-] becomes `_HH` (two uppercase hex
//     digits): `alice@example.com` → `alice_40example.com`, `josé` → `jos_C3_A9`, a space `_20`;
//   - a `_` stays as it is (`user_1` → `user_1`), unless the two characters after it are
//     uppercase hex digits, where it would read as an escape: then it becomes `_5F`
//     (`ID_12` → `ID_5F12`).
// Reading back, `_` followed by two uppercase hex digits is a byte and everything else is
// literal, so the mapping is one-to-one (userForNamespace undoes it): two users never share a
// namespace. The common ids (uuids, `user_1`, numeric ids) come through unchanged.

export const DEFAULT_NAMESPACE_TEMPLATE = 'workspace:{user}';

export const NAMESPACE_NAME_PATTERN = /^[a-z]+:[A-Za-z0-9_:.\-]+$/;
export const NAMESPACE_NAME_MAX_LENGTH = 256;

export type NamespaceKind = 'workspace' | 'team' | 'org' | 'custom';

const USER = '{user}';
const LITERAL = /[A-Za-z0-9_:.\-]/;
const HEX_PAIR = /^[0-9A-F]{2}$/;

/** Why a namespace name breaks the contract, or undefined when it is valid. */
export function namespaceNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'namespace name is empty';
  if (name.length > NAMESPACE_NAME_MAX_LENGTH) return `namespace name exceeds ${NAMESPACE_NAME_MAX_LENGTH} chars`;
  if (!NAMESPACE_NAME_PATTERN.test(name)) return `namespace name ${JSON.stringify(name)} does not match required pattern ${NAMESPACE_NAME_PATTERN.source}`;
  return undefined;
}

/** Why a template cannot be used, or undefined when it can. */
export function namespaceTemplateProblem(template: string): string | undefined {
  const at = template.indexOf(USER);
  if (at < 0 || template.indexOf(USER, at + 1) >= 0) return `the namespace template ${JSON.stringify(template)} must contain {user} exactly once`;
  const sample = template.replace(USER, 'u');
  if (!NAMESPACE_NAME_PATTERN.test(sample)) {
    return `the namespace template ${JSON.stringify(template)} does not give a valid namespace name (pattern ${NAMESPACE_NAME_PATTERN.source}, e.g. workspace:{user} or team:acme:{user})`;
  }
  return undefined;
}

export function escapeUserId(userId: string): string {
  let out = '';
  const chars = Array.from(userId);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '_') {
      const next2 = (chars[i + 1] ?? '') + (chars[i + 2] ?? '');
      out += HEX_PAIR.test(next2) ? '_5F' : '_';
    } else if (LITERAL.test(c)) {
      out += c;
    } else {
      for (const byte of Buffer.from(c, 'utf8')) out += '_' + byte.toString(16).toUpperCase().padStart(2, '0');
    }
  }
  return out;
}

export function unescapeUserId(escaped: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < escaped.length; i++) {
    const pair = escaped.slice(i + 1, i + 3);
    if (escaped[i] === '_' && HEX_PAIR.test(pair)) {
      bytes.push(parseInt(pair, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(escaped[i]!, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/**
 * The namespace of a user. Throws when the template is unusable or the name breaks the
 * contract (an empty user id, or a name over 256 characters), naming the problem.
 */
export function namespaceFor(template: string, userId: string): string {
  const templateProblem = namespaceTemplateProblem(template);
  if (templateProblem) throw new Error(templateProblem);
  const name = template.replace(USER, escapeUserId(userId));
  const problem = namespaceNameProblem(name);
  if (problem) throw new Error(`user ${JSON.stringify(userId)}: ${problem}`);
  return name;
}

/** The user a namespace belongs to under a template, or undefined when it is not one of its names. */
export function userForNamespace(template: string, name: string): string | undefined {
  const at = template.indexOf(USER);
  if (at < 0) return undefined;
  const prefix = template.slice(0, at);
  const suffix = template.slice(at + USER.length);
  if (!name.startsWith(prefix) || !name.endsWith(suffix) || name.length <= prefix.length + suffix.length) return undefined;
  const escaped = name.slice(prefix.length, name.length - suffix.length);
  const user = unescapeUserId(escaped);
  return escapeUserId(user) === escaped ? user : undefined;
}

/** The kind workspace-server derives from a name's prefix: workspace, team, org, else custom. */
export function namespaceKindOf(name: string): NamespaceKind {
  const prefix = name.slice(0, name.indexOf(':'));
  return prefix === 'workspace' || prefix === 'team' || prefix === 'org' ? prefix : 'custom';
}
