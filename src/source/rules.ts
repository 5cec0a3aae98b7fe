// The app's rules for which source rows are memories, shared by the migration, verify,
// rollback and the SQLite store so that all of them count the same rows.

/** Rows of this user are prompt fragments, not memories. */
export const SYSTEM_PROMPTS_USER = 'system_prompts';

/** Content above this many bytes is skipped (the app never wrote such rows). */
export const MAX_CONTENT_BYTES = 1024 * 1024;

/** Other system_* users are the app's bookkeeping rows: never memories. */
export function isSystemUser(userId: string): boolean {
  return userId !== SYSTEM_PROMPTS_USER && userId.startsWith('system_');
}

/**
 * An id or user id as PostgreSQL can record it: text there cannot hold U+0000, so each one
 * becomes the six characters \u0000, as the reject file's JSON writes it. Ids and users
 * without one (every row the app wrote) are unchanged. The migration records skips this
 * way and verify looks them up this way.
 */
export function storableText(s: string): string {
  return s.indexOf('\u0000') === -1 ? s : s.replaceAll('\u0000', '\\u0000');
}
