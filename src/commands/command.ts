// The one shape of a command. Each src/commands/X.ts exports a CliCommand: its commander
// Command (name, description, arguments, options with their defaults, examples), a run()
// that does the work and returns the report and the exit code, and a render() that prints the
// report for a person. --json prints the report itself instead (printResult), so every
// command prints exactly one JSON object on stdout.
import type { Command } from 'commander';
import type { Output } from '../output.js';

export interface CommandResult<R> {
  report: R;
  exitCode: number;
}

export interface CliCommand<F, R> {
  /** A fresh commander Command: name, description, arguments, options and help examples. */
  define(): Command;
  /** The flags from commander's options and the command's arguments (default: the options). */
  flags?(opts: Record<string, unknown>, args: unknown[]): F;
  run(flags: F, out: Output): Promise<CommandResult<R>>;
  /** The report for a person (without --json). */
  render(report: R, out: Output): void;
  /** The --json object, when it is not the report as it is. */
  json?(report: R): unknown;
  /** The command that runs instead, for these flags: an alias such as `migrate --rollback`. */
  aliasFor?(flags: F): CliCommand<F, unknown> | undefined;
}

/** --json: the report as the one JSON object on stdout; otherwise the command's own lines. */
export function printResult<F, R>(command: CliCommand<F, R>, report: R, out: Output): void {
  if (out.json) out.result(command.json ? command.json(report) : report);
  else command.render(report, out);
}

/** Runs a command (or the one it is an alias for) and prints its result; returns the exit code. */
export async function execute<F, R>(command: CliCommand<F, R>, flags: F, out: Output): Promise<number> {
  const target = command.aliasFor?.(flags);
  if (target) return execute(target, flags, out);
  const { report, exitCode } = await command.run(flags, out);
  printResult(command, report, out);
  return exitCode;
}

/**
 * The commander Command of a definition, with its action: the flags go to execute() with the
 * Output made for them, and the exit code becomes the process's.
 */
export function toCommander<F, R>(command: CliCommand<F, R>, outputFor: (opts: { json?: boolean; quiet?: boolean }) => Output): Command {
  const cmd = command.define();
  cmd.action(async (...args: unknown[]) => {
    const self = args[args.length - 1] as Command;
    const opts = self.opts();
    const flags = command.flags ? command.flags(opts, self.processedArgs) : (opts as F);
    process.exitCode = await execute(command, flags, outputFor(opts));
  });
  return cmd;
}
