// `memory-migrate serve`: the migrated store as a memory-plugin v1 HTTP server (the contract
// in issue 15 and MIGRATION.md), over the same rows the app's SQL sees: migrated memories are
// served at once, in the namespace their user maps to through --namespace-template, and
// memories written over HTTP land in the same memories table (src/plugin-server/).
// It prints one line, `listening on http://HOST:PORT`, when it is ready, and stops on
// SIGINT/SIGTERM once the requests in flight are answered (exit 0).
import { isIP } from 'node:net';
import { Command, Option } from 'commander';
import { UsageError, errorMessage } from '../errors.js';
import { redact, registerSecret } from '../secrets.js';
import type { Output } from '../output.js';
import type { CliCommand } from './command.js';
import { BearerToken } from '../plugin-server/auth.js';
import { Handlers } from '../plugin-server/handlers.js';
import { createPluginServer, DEFAULT_MAX_BODY_BYTES } from '../plugin-server/http-server.js';
import { prepareStore, storeDimensions } from '../plugin-server/schema.js';
import { PluginStore } from '../plugin-server/store.js';
import type { Capability } from '../plugin-server/wire.js';
import { DEFAULT_NAMESPACE_TEMPLATE, namespaceTemplateProblem } from '../plugin-namespace.js';
import {
  buildProvider,
  buildService,
  describeTarget,
  examples,
  openTarget,
  outputOptions,
  parsePositiveInt,
  resolveTarget,
  targetOptions,
  textEmbedder,
  type EmbedderFlags,
  type TargetFlags,
} from './shared.js';

export const DEFAULT_LISTEN = '127.0.0.1:9100';
export const TOKEN_ENV = 'MEMORY_PLUGIN_TOKEN';

export interface ServeFlags extends TargetFlags, EmbedderFlags {
  listen: string;
  token?: string;
  allowUnauthenticated?: boolean;
  namespaceTemplate: string;
  maxBodyBytes: number;
  json?: boolean;
  quiet?: boolean;
}

export interface ServeReport {
  ok: boolean;
  command: 'serve';
  target: string;
  mode: 'installed' | 'adopted';
  url: string;
  capabilities: Capability[];
  requests: number;
}

export const serveCommand: CliCommand<ServeFlags, ServeReport> = {
  define() {
    const cmd = new Command('serve').description('serve the migrated store over the memory-plugin v1 HTTP contract (health, namespaces, commit, search, forget)');
    targetOptions(cmd)
      .option('--listen <host:port>', 'address to listen on (port 0: any free port, printed when ready)', DEFAULT_LISTEN)
      .option('--token <token>', `require Authorization: Bearer <token> on every route but health (default: $${TOKEN_ENV})`)
      .option('--allow-unauthenticated', 'listen on a non-loopback address without a token (a private network only)', false)
      .option('--namespace-template <t>', 'the namespace of a migrated user: {user} is the user id, escaped as in README', DEFAULT_NAMESPACE_TEMPLATE)
      .option('--max-body-bytes <n>', 'largest request body accepted (larger: 413)', parsePositiveInt('--max-body-bytes'), DEFAULT_MAX_BODY_BYTES)
      .addOption(new Option('--embedder <kind>', 'embedder for commits and for searches by query (default: none; the embedding capability is then not reported)').choices(['openai', 'local']))
      .option('--model <name>', 'embedding model (default: the embedder\'s own)')
      .option('--dimensions <n>', "vector width (default: the model's own)", parsePositiveInt('--dimensions'));
    outputOptions(cmd);
    return examples(
      cmd,
      'memory-migrate serve --pglite-dir ./.memory-migrate/pgdata',
      `${TOKEN_ENV}=s3cret memory-migrate serve --database-url postgres://app@db/app --listen 0.0.0.0:9100 --embedder openai`,
    );
  },

  async run(flags, out) {
    const listen = parseListen(flags.listen);
    const templateProblem = namespaceTemplateProblem(flags.namespaceTemplate);
    if (templateProblem) throw new UsageError(`${templateProblem}: pass --namespace-template like workspace:{user}`);
    const tokenText = flags.token ?? process.env[TOKEN_ENV];
    if (tokenText !== undefined && tokenText.trim() === '') {
      throw new UsageError(`the token is empty: pass --token <token> (or set ${TOKEN_ENV}) with a secret, or leave both unset on loopback`);
    }
    registerSecret(tokenText);
    if (!tokenText && !isLoopback(listen.host) && !flags.allowUnauthenticated) {
      throw new UsageError(
        `refusing to listen on ${listen.host} without a token: pass --token <token> (or set ${TOKEN_ENV}), ` +
          'listen on 127.0.0.1, or pass --allow-unauthenticated on a private network',
      );
    }
    // stdout carries only the `listening on` line (and the --json report at the end).
    const log = stderrOutput(out);
    const target = resolveTarget(flags, log);
    const provider = flags.embedder ? buildProvider({ ...flags, embedder: flags.embedder }) : null;
    const db = await openTarget(target);
    let closed = false;
    const closeDb = async () => {
      if (!closed) {
        closed = true;
        await db.close();
      }
    };
    try {
      const dimensions = await storeDimensions(db, provider?.dimensions ?? null);
      if (provider && provider.dimensions !== dimensions) {
        throw new UsageError(
          `the store's vectors are vector(${dimensions}) but ${provider.model} makes ${provider.dimensions} dimensions: ` +
            'pass the --embedder/--model/--dimensions the migration used',
        );
      }
      const prepared = await prepareStore(db, dimensions);
      const embedder = provider ? textEmbedder(buildService(provider, db, false), provider) : null;
      const store = new PluginStore({
        db,
        template: flags.namespaceTemplate,
        dimensions,
        embed: embedder ? async (text) => Array.from((await embedder.embed([text]))[0]!) : null,
        model: provider?.model ?? null,
      });
      const capabilities: Capability[] = ['fts', ...(embedder ? (['embedding'] as const) : []), 'ttl', 'pin', 'propagation'];
      const server = createPluginServer({
        handlers: new Handlers(store, capabilities),
        token: tokenText ? new BearerToken(tokenText) : null,
        maxBodyBytes: flags.maxBodyBytes,
        onInternalError: (err) => log.error(`memory-migrate serve: 500 ${err.message}`),
      });
      const stopped = waitForStopSignal();
      let bound: { host: string; port: number };
      try {
        bound = await server.listen(listen.host, listen.port);
      } catch (err) {
        stopped.cancel();
        const code = (err as { code?: string }).code;
        throw new UsageError(`cannot listen on ${flags.listen} (${code ?? errorMessage(err)}): pick another --listen address or port`);
      }
      const url = `http://${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`;
      log.info(
        `Serving ${describeTarget(target)} (${prepared.mode === 'adopted' ? `the app's own table ${prepared.table}` : 'table memories'}, ` +
          `vector(${dimensions})), namespaces ${flags.namespaceTemplate}, capabilities ${capabilities.join(', ')}` +
          (tokenText ? ', bearer token required' : ''),
      );
      process.stdout.write(`listening on ${url}\n`);
      const signal = await stopped.promise;
      log.info(`${signal}: finishing the requests in flight`);
      await server.close();
      await closeDb();
      return {
        report: { ok: true, command: 'serve', target: describeTarget(target), mode: prepared.mode, url, capabilities, requests: server.requests },
        exitCode: 0,
      };
    } finally {
      await closeDb();
    }
  },

  render(r, out) {
    stderrOutput(out).info(`stopped after ${r.requests} request${r.requests === 1 ? '' : 's'}`);
  },
};

/** HOST:PORT, [v6]:PORT; port 0 means any free port. */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new UsageError(`--listen must be HOST:PORT (e.g. 127.0.0.1:9100, [::1]:9100, 0.0.0.0:0), not "${value}"`);
  return { host: (m[1] ?? m[2])!, port };
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

function stderrOutput(out: Output): Output {
  return {
    json: out.json,
    quiet: out.quiet,
    info: (line) => {
      if (!out.quiet) process.stderr.write(redact(line) + '\n');
    },
    error: (line) => out.error(line),
    result: (obj) => out.result(obj),
  };
}

function waitForStopSignal(): { promise: Promise<NodeJS.Signals>; cancel(): void } {
  let handler: (signal: NodeJS.Signals) => void = () => {};
  const promise = new Promise<NodeJS.Signals>((resolve) => {
    handler = (signal) => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      resolve(signal);
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
  return {
    promise,
    cancel: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}


