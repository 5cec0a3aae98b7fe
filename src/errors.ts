// Errors the operator can fix get a one-line message naming the problem and the fix, and
// exit code 2. Anything else is a run-time failure (exit 1).

export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Failure at run time that is already explained in one line (no stack trace wanted). */
export class RunError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'RunError';
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** A message as one line: line breaks (driver errors have them) become "; ". */
export function oneLine(message: string): string {
  return message
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .join('; ');
}

/** The SQLSTATE of a PostgreSQL error (postgres.js and PGlite both put it in `code`). */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}


/**
 * A failure while rows are being written, as one line that says what happened, how to fix
 * it, and that running the same command again resumes. Conditions the operator fixes on the
 * server (disk, statement timeout) are exit 2; the rest exit 1.
 */
export function describeLoadError(err: unknown, opts: { loading?: boolean } = {}): Error {
  const code = sqlState(err);
  const msg = oneLine(errorMessage(err));
  const RESUME =
    opts.loading === false
      ? 'every loaded row is committed'
      : 'the batch in flight was rolled back and every batch before it is committed';
  const again = 'then run the same command again to resume';
  if (code === '57014' || /statement timeout/i.test(msg)) {
    return new UsageError(
      `the target cancelled a statement (${msg}): ${RESUME}; raise statement_timeout for this role ` +
        `(ALTER ROLE <role> SET statement_timeout = 0) or lower --batch-size, ${again}`,
    );
  }
  if (code === '53100' || /no space left on device|disk full/i.test(msg)) {
    return new UsageError(`the target ran out of disk space (${msg}): ${RESUME}; free space on the database server, ${again}`);
  }
  if (code === '53200' || /out of memory/i.test(msg)) {
    return new RunError(`the target ran out of memory (${msg}): ${RESUME}; lower --batch-size, ${again}`);
  }
  if (code === '55P03' || /lock timeout/i.test(msg)) {
    return new RunError(`a lock wait timed out on the target (${msg}): ${RESUME}; stop whatever holds the lock, ${again}`);
  }
  const conn = (err as { code?: unknown } | null)?.code;
  if ((code && code.startsWith('08')) || code === '57P01' || conn === 'ECONNRESET' || conn === 'CONNECTION_CLOSED' || conn === 'CONNECTION_ENDED') {
    return new RunError(`lost the connection to the target (${msg}): ${RESUME}; ${again}`);
  }
  return new RunError(`${msg} — ${RESUME}; fix the cause, ${again}`);
}
