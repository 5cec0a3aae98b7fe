// The seven operations of the contract: validate the request, ask the store, shape the
// answer (status and JSON body). The HTTP plumbing (bodies, auth, errors) is http-server.ts.
import { PluginError, notFound, toPluginError } from './errors.js';
import type { Route } from './router.js';
import type { PluginStore } from './store.js';
import {
  checkNamespaceName,
  isUuid,
  parseForgetRequest,
  parseMemoryWrite,
  parseNamespacePatch,
  parseNamespaceUpsert,
  parseSearchRequest,
} from './validation.js';
import { CONTRACT_VERSION, type Capability, type HealthResponse } from './wire.js';

export interface Answer {
  status: number;
  body?: unknown;
}

/** How long health waits for the database before it calls the store down (the reference: 2 s). */
export const HEALTH_TIMEOUT_MS = 2000;

export class Handlers {
  constructor(
    private readonly store: PluginStore,
    private readonly capabilities: Capability[],
  ) {}

  async handle(r: Route, body: unknown): Promise<Answer> {
    switch (r.op) {
      case 'health':
        return this.health();
      case 'upsertNamespace': {
        const name = checkNamespaceName(r.name);
        return { status: 200, body: await this.store.upsertNamespace(name, parseNamespaceUpsert(body)) };
      }
      case 'patchNamespace': {
        const name = checkNamespaceName(r.name);
        return { status: 200, body: await this.store.patchNamespace(name, parseNamespacePatch(body)) };
      }
      case 'deleteNamespace': {
        const name = checkNamespaceName(r.name);
        if (!(await this.store.deleteNamespace(name))) throw notFound('namespace not found');
        return { status: 204 };
      }
      case 'commit': {
        const name = checkNamespaceName(r.name);
        const write = parseMemoryWrite(body, this.store.dimensions);
        return { status: 201, body: await this.store.commit(name, write) };
      }
      case 'search':
        return { status: 200, body: { memories: await this.store.search(parseSearchRequest(body, this.store.dimensions)) } };
      case 'forget': {
        const req = parseForgetRequest(body);
        // No memory has an id that is not a UUID.
        if (!isUuid(r.id) || !(await this.store.forget(r.id.toLowerCase(), req.requestedByNamespace))) {
          throw notFound('memory not found in namespace');
        }
        return { status: 204 };
      }
    }
  }

  private async health(): Promise<Answer> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(Object.assign(new Error(`no answer within ${HEALTH_TIMEOUT_MS / 1000} s`), { code: 'STORE_TIMEOUT' })),
        HEALTH_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([this.store.ping(), timeout]);
    } catch (err) {
      // Whatever stops the ping, the plugin cannot serve: 503, as the contract has it.
      throw new PluginError(503, 'unavailable', `the store is unreachable: ${toPluginError(err).message}`);
    } finally {
      clearTimeout(timer);
    }
    const body: HealthResponse = { status: 'ok', version: CONTRACT_VERSION, capabilities: this.capabilities };
    return { status: 200, body };
  }
}

