// Runs the real CLI (dist/src/cli.js) as a child process, as an operator would.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TargetOptions } from '../../src/postgres/connection.js';

export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
export const FIXTURE = fileURLToPath(new URL('../../../fixtures/espressobot_memory.db', import.meta.url));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunCliOptions {
  /** Working directory of the CLI (default: this process's). */
  cwd?: string;
}

export function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  timeoutMs = 240_000,
  options: RunCliOptions = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const childEnv: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, CI: 'true', DATABASE_URL: undefined, ...env })) {
      if (v !== undefined) childEnv[k] = v;
    }
    const child = spawn(process.execPath, [CLI, ...args], {
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** CLI flags that point at a test target. */
export function targetArgs(t: TargetOptions): string[] {
  return t.databaseUrl ? ['--database-url', t.databaseUrl] : ['--pglite-dir', t.pgliteDir!];
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export function parseJson(r: CliResult): any {
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new Error(`stdout is not one JSON object (exit ${r.code}):\n${r.stdout}\n--- stderr:\n${r.stderr}`);
  }
}
