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
