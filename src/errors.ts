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
