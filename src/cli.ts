#!/usr/bin/env node
// The program: each command is defined in src/commands/ (its flags, help, run and render) and
// registered here; main() turns failures into exit codes. Exit codes: 0 success, 1 run-time
// failure or failed self-test, 2 bad usage or input, 3 verify mismatch, 130 interrupted.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { createOutput, type Output } from './output.js';
import { UsageError, errorMessage, oneLine } from './errors.js';
import { redact, registerProcessSecrets } from './secrets.js';
import { toCommander, type CliCommand } from './commands/command.js';
import { migrateCommand } from './commands/migrate.js';
import { schemaCommand } from './commands/schema.js';
import { selftestCommand } from './commands/selftest.js';
import { statusCommand } from './commands/status.js';
import { verifyCommand } from './commands/verify.js';
import { rollbackCommand } from './commands/rollback.js';
import { searchCommand } from './commands/search.js';
import { serveCommand } from './commands/serve.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** In the order --help lists them. */
const COMMANDS: CliCommand<never, unknown>[] = [
  migrateCommand,
  schemaCommand,
  selftestCommand,
  statusCommand,
  verifyCommand,
  rollbackCommand,
  searchCommand,
  serveCommand,
] as CliCommand<never, unknown>[];

/** The running command's output: a failure still prints its one JSON object with --json. */
let activeOut: Output | null = null;

function outputFor(opts: { json?: boolean; quiet?: boolean }): Output {
  activeOut = createOutput({ json: opts.json, quiet: opts.quiet });
  return activeOut;
}

export function buildProgram(): Command {
  const program = new Command('memory-migrate')
    .description(
      "Move an AI agent's long-term memory from a SQLite file into PostgreSQL with pgvector, and prove nothing was lost.\n" +
        'With no --database-url and no $DATABASE_URL it uses an embedded PostgreSQL (PGlite with pgvector).',
    )
    .version(pkg.version, '--version')
    .showHelpAfterError('(run with --help for usage)')
    // Commander's own messages (help, bad arguments) pass through redact() too; subcommands
    // inherit this.
    .configureOutput({
      writeOut: (str) => process.stdout.write(redact(str)),
      writeErr: (str) => process.stderr.write(redact(str)),
    })
    .exitOverride();

  for (const command of COMMANDS) {
    const cmd = toCommander(command, outputFor).copyInheritedSettings(program);
    // --help lists every flag with its default; a flag without one that must be given says so.
    for (const o of cmd.options) {
      if (o.mandatory && !/\brequired\b/.test(o.description)) o.description += ' (required)';
    }
    program.addCommand(cmd);
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // Before anything can print: every URL password and key this process can see.
  registerProcessSecrets(argv);
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      // Commander already printed its one-line message.
      return 2;
    }
    const code = (err as { exitCode?: number }).exitCode;
    const exitCode = err instanceof UsageError ? 2 : typeof code === 'number' ? code : 1;
    const out = activeOut ?? createOutput();
    // One line naming the problem and the fix; the stack only with DEBUG=memory-migrate.
    const message = redact(oneLine(errorMessage(err)));
    if (out.json) out.result((err as { report?: unknown }).report ?? { ok: false, error: message, exitCode });
    out.error(`memory-migrate: ${message}`);
    if (process.env['DEBUG']?.includes('memory-migrate') && err instanceof Error && err.stack) out.error(redact(err.stack));
    return exitCode;
  }
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`memory-migrate: ${redact(errorMessage(err))}\n`);
    process.exitCode = 1;
  },
);
