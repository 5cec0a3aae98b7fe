// Checks the plugin before anything is sent, so bad input fails with one line and exit 2 and
// nothing written: the URL, the namespace template, that the plugin answers /v1/health and is
// healthy, and that it takes our token (a read-only search). Also the probe of the vector
// width a plugin accepts (the contract does not say; a search with a vector of ours is
// read-only and answers it).
import { UsageError } from '../errors.js';
import { registerSecret, registerUrlSecrets } from '../secrets.js';
import type { Output } from '../output.js';
import { DEFAULT_NAMESPACE_TEMPLATE, namespaceTemplateProblem } from '../plugin-namespace.js';
import { PluginClient, PluginRejection, PluginUnavailable, type PluginHealth } from './http.js';

export interface PluginTargetFlags {
  /** --to-plugin URL */
  toPlugin?: string;
  namespaceTemplate?: string;
  /** --plugin-token (default $MEMORY_PLUGIN_TOKEN). */
  pluginToken?: string;
}

export interface ConnectedPlugin {
  client: PluginClient;
  template: string;
  health: PluginHealth;
  /** Null when the plugin accepts vectors of this width, else why not. */
  probeEmbeddingWidth(dimensions: number): Promise<string | null>;
}

/** A namespace no one writes: searching it reads nothing and proves the route and the token. */
const PROBE_NAMESPACE = 'custom:memory-migrate-probe';

export async function connectPlugin(flags: PluginTargetFlags, out: Output): Promise<ConnectedPlugin> {
  const raw = flags.toPlugin ?? '';
  registerUrlSecrets(raw);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--to-plugin must be the plugin's base URL, e.g. http://127.0.0.1:9100, not ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--to-plugin must be an http:// or https:// URL, not ${url.protocol}//...`);
  }
  const template = flags.namespaceTemplate ?? DEFAULT_NAMESPACE_TEMPLATE;
  const problem = namespaceTemplateProblem(template);
  if (problem) throw new UsageError(`${problem}; fix --namespace-template`);
  const token = flags.pluginToken ?? process.env['MEMORY_PLUGIN_TOKEN'] ?? undefined;
  registerSecret(token);
  const base = url.toString().replace(/\/+$/, '');
  // Checks get one quick retry: a plugin that is not there is bad input, not a blip to wait out.
  const check = new PluginClient(base, { ...(token ? { token } : {}), retries: 1, minTimeoutMs: 200, timeoutMs: 10_000 });
  let health: PluginHealth;
  try {
    health = await check.health();
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new UsageError(
      `cannot use the memory plugin at ${check.displayUrl}: /v1/health did not answer 200 (${why.replace(/^the plugin at \S+ /, '')}); ` +
        'check --to-plugin and that the plugin and its store are up; nothing was written',
    );
  }
  if (!health || !Array.isArray(health.capabilities ?? [])) {
    throw new UsageError(`${check.displayUrl} does not answer /v1/health like a memory-plugin v1 server; check --to-plugin`);
  }
  health = { status: String(health.status), version: String(health.version), capabilities: (health.capabilities ?? []).map(String) };
  if (health.status !== 'ok') out.info(`Note: the plugin reports status ${health.status}`);
  try {
    await check.search({ namespaces: [PROBE_NAMESPACE], limit: 1 });
  } catch (err) {
    if (err instanceof PluginRejection && (err.status === 401 || err.status === 403)) {
      throw new UsageError(
        `the plugin at ${check.displayUrl} refused ${token ? 'the token' : 'a request without a token'} (${err.message}); ` +
          'set --plugin-token or MEMORY_PLUGIN_TOKEN to the token it expects; nothing was written',
      );
    }
    const why = err instanceof Error ? err.message : String(err);
    throw new UsageError(`the plugin at ${check.displayUrl} failed a read-only search (${why}); is it a memory-plugin v1 server? nothing was written`);
  }
  const client = new PluginClient(base, token ? { token } : {});
  return {
    client,
    template,
    health,
    async probeEmbeddingWidth(dimensions) {
      const probe = new PluginClient(base, { ...(token ? { token } : {}), retries: 0 });
      const v = new Array<number>(dimensions).fill(0);
      v[0] = 1;
      try {
        await probe.search({ namespaces: [PROBE_NAMESPACE], limit: 1, embedding: v });
        return null;
      } catch (err) {
        if (err instanceof PluginRejection || err instanceof PluginUnavailable) return err.message;
        throw err;
      }
    },
  };
}
