// Where lines go. Normal runs print progress and the summary on stdout. --json keeps stdout
// for the one JSON object and sends everything else to stderr. --quiet prints errors only.
// Every line passes through redact(), so no secret reaches a terminal or a log file.
import { redact } from './secrets.js';

export interface Output {
  readonly json: boolean;
  readonly quiet: boolean;
  /** A normal line of output (progress, notes, summary). */
  info(line: string): void;
  /** A problem the operator should see even with --quiet. */
  error(line: string): void;
  /** The one JSON report on stdout (--json). */
  result(obj: unknown): void;
}

export function createOutput(opts: { json?: boolean; quiet?: boolean } = {}): Output {
  const json = opts.json ?? false;
  const quiet = opts.quiet ?? false;
  return {
    json,
    quiet,
    info(line) {
      if (quiet) return;
      (json ? process.stderr : process.stdout).write(redact(line) + '\n');
    },
    error(line) {
      process.stderr.write(redact(line) + '\n');
    },
    result(obj) {
      process.stdout.write(redact(JSON.stringify(obj, null, 2)) + '\n');
    },
  };
}
