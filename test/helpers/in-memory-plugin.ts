// A minimal memory-plugin v1 server for tests: node:http on 127.0.0.1, a random port, every
// namespace and memory in two Maps the test can read and edit. Written from the contract
// notes (/work/shared/reference/memory-plugin-v1.md) alone, never from src/plugin-server/:
// the contract suite runs against both, so a disagreement shows that one side misread the
// contract. Where the spec and the reference plugin differ it follows the spec:
//   - committing to a namespace that does not exist is 404 not_found (the reference: 500);
//   - health while the store is down is 503 with the Error envelope, code `unavailable`;
//   - an empty search answers {"memories":[]} (the reference: null);
//   - search `limit` is 1..100 (spec minimum 1; absent means 20);
//   - pinned rows come first on every search path (the README: "rank pinned rows first").
// Beyond the contract: an optional bearer token (401, code `forbidden`, on every route but
// health) and fault hooks for the client's retry / breaker / reject tests.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';

export type PluginNamespace = {
  name: string;
  kind: string;
  expires_at?: string;
  metadata?: Record<string, unknown>;
  created_at: string;
};

export type PluginMemory = {
  id: string;
  namespace: string;
  content: string;
  kind: string;
  source: string;
  expires_at?: string;
  propagation?: Record<string, unknown>;
  pin: boolean;
  embedding?: number[];
  created_at: string;
  /** Insertion order, to break created_at ties (the clock's millisecond is coarse). */
  seq: number;
};

export interface PluginRequest {
  method: string;
  path: string;
  body?: unknown;
  /** Status answered, or 0 when the connection was dropped / held. */
  status: number;
}

/** What a fault hook answers instead of the plugin: a status (with the envelope, or a body of its own), a dropped connection, or nothing (the request goes through). */
export type FaultAnswer = { status: number; body?: unknown } | { drop: true } | { hold: Promise<unknown> } | undefined;
export type FaultFn = (req: { method: string; path: string; body: unknown }) => FaultAnswer | Promise<FaultAnswer>;

export interface InMemoryPluginOptions {
  token?: string;
  /** Capabilities reported by health (default all five: the plugin implements them all). */
  capabilities?: string[];
  /** When set, embeddings of any other width are a 400 (as a fixed vector(N) column would refuse them). */
  embeddingDims?: number;
}

export interface InMemoryPlugin {
  url: string;
  close(): Promise<void>;
  storeDown(): void;
  storeUp(): void;
  namespaces: Map<string, PluginNamespace>;
  memories: Map<string, PluginMemory>;
  requests: PluginRequest[];
  /** The next n requests matching `match` (default: every request but health) answer `status` with the envelope. */
  failNext(n: number, status: number, match?: (req: { method: string; path: string; body: unknown }) => boolean): void;
  /** A hook consulted before every request (after failNext); undefined lets the request through. */
  setFault(fn: FaultFn | undefined): void;
  /** Requests that change data (PUT, PATCH, DELETE, POST to .../memories). */
  writes(): PluginRequest[];
}

const NAME_PATTERN = /^[a-z]+:[A-Za-z0-9_:.\-]+$/;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const NAMESPACE_KINDS = ['workspace', 'team', 'org', 'custom'];
const MEMORY_KINDS = ['fact', 'summary', 'checkpoint'];
const MEMORY_SOURCES = ['agent', 'runtime', 'user'];
const ALL_CAPABILITIES = ['fts', 'embedding', 'ttl', 'pin', 'propagation'];
const MAX_BODY = 16 * 1024 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const bad = (message: string) => new HttpError(400, 'bad_request', message);
const notFound = (message: string) => new HttpError(404, 'not_found', message);

function namespaceNameError(name: string): string | undefined {
  if (name.length === 0) return 'namespace name is empty';
  if (name.length > 256) return 'namespace name exceeds 256 chars';
  if (!NAME_PATTERN.test(name)) return `namespace name ${JSON.stringify(name)} does not match required pattern ${NAME_PATTERN.source}`;
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An optional, nullable field: undefined when absent or null, else checked. */
function optionalDateTime(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !DATE_TIME.test(v) || Number.isNaN(Date.parse(v))) throw bad(`${field} must be an RFC 3339 date-time`);
  return v;
}

function optionalObject(body: Record<string, unknown>, field: string): Record<string, unknown> | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw bad(`${field} must be an object`);
  return v;
}

function optionalVector(body: Record<string, unknown>, field: string, dims: number | undefined): number[] | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) throw bad(`${field} must be an array of numbers`);
  if (v.length === 0) return undefined;
  if (dims !== undefined && v.length !== dims) throw bad(`${field} has ${v.length} dimensions, expected ${dims}`);
  return v as number[];
}

function requiredEnum(body: Record<string, unknown>, field: string, values: string[]): string {
  const v = body[field];
  if (v === undefined || v === null || v === '') throw bad(`${field} is required`);
  if (typeof v !== 'string' || !values.includes(v)) throw bad(`${field} ${JSON.stringify(v)} is not one of ${values.join(', ')}`);
  return v;
}

function isExpired(m: { expires_at?: string }, now: number): boolean {
  return m.expires_at !== undefined && Date.parse(m.expires_at) <= now;
}

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

const words = (s: string): string[] => s.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];

function namespaceJson(ns: PluginNamespace) {
  return {
    name: ns.name,
    kind: ns.kind,
    ...(ns.expires_at !== undefined ? { expires_at: ns.expires_at } : {}),
    ...(ns.metadata !== undefined ? { metadata: ns.metadata } : {}),
    created_at: ns.created_at,
  };
}

function memoryJson(m: PluginMemory, score?: number) {
  return {
    id: m.id,
    namespace: m.namespace,
    content: m.content,
    kind: m.kind,
    source: m.source,
    ...(m.expires_at !== undefined ? { expires_at: m.expires_at } : {}),
    ...(m.propagation !== undefined ? { propagation: m.propagation } : {}),
    ...(m.pin ? { pin: true } : {}),
    created_at: m.created_at,
    ...(score !== undefined ? { score } : {}),
  };
}

export async function startInMemoryPlugin(opts: InMemoryPluginOptions = {}): Promise<InMemoryPlugin> {
  const namespaces = new Map<string, PluginNamespace>();
  const memories = new Map<string, PluginMemory>();
  const requests: PluginRequest[] = [];
  const capabilities = opts.capabilities ?? ALL_CAPABILITIES;
  let down = false;
  let seq = 0;
  let fault: FaultFn | undefined;
  const failQueue: { n: number; status: number; match: (req: { method: string; path: string; body: unknown }) => boolean }[] = [];
  const sockets = new Set<Socket>();

  function handle(method: string, path: string, body: unknown, authorization: string | undefined): { status: number; json?: unknown } {
    if (path === '/v1/health') {
      if (method !== 'GET') throw notFound('no route');
      if (down) throw new HttpError(503, 'unavailable', 'store unavailable');
      return { status: 200, json: { status: 'ok', version: '1.0.0', capabilities } };
    }
    if (opts.token !== undefined && authorization !== `Bearer ${opts.token}`) {
      throw new HttpError(401, 'forbidden', 'missing or wrong bearer token');
    }
    const routed = route(method, path);
    if (down) throw new HttpError(503, 'unavailable', 'store unavailable');
    return routed(body);
  }

  // Routes first (so a bad path is a 404 even while the store is down), then the handler.
  function route(method: string, path: string): (body: unknown) => { status: number; json?: unknown } {
    if (path === '/v1/search') {
      if (method !== 'POST') throw notFound('no route');
      return (body) => search(body);
    }
    if (path.startsWith('/v1/memories/')) {
      const id = decodeSegment(path.slice('/v1/memories/'.length));
      if (method !== 'DELETE' || id.includes('/')) throw notFound('no route');
      if (id === '') throw bad('memory id missing');
      return (body) => forget(id, body);
    }
    if (path.startsWith('/v1/namespaces/')) {
      const rest = path.slice('/v1/namespaces/'.length);
      const slash = rest.indexOf('/');
      const name = decodeSegment(slash < 0 ? rest : rest.slice(0, slash));
      if (slash >= 0) {
        if (rest.slice(slash + 1) !== 'memories' || method !== 'POST') throw notFound('no route');
        return (body) => commit(checkName(name), body);
      }
      if (name === '') throw bad('namespace name missing');
      if (method === 'PUT') return (body) => upsertNamespace(checkName(name), body);
      if (method === 'PATCH') return (body) => patchNamespace(checkName(name), body);
      if (method === 'DELETE') return () => deleteNamespace(checkName(name));
      throw new HttpError(405, 'bad_request', 'method not allowed');
    }
    throw notFound('no route');
  }

  function decodeSegment(s: string): string {
    try {
      return decodeURIComponent(s);
    } catch {
      throw bad('malformed path');
    }
  }

  function checkName(name: string): string {
    const err = namespaceNameError(name);
    if (err) throw bad(err);
    return name;
  }

  function objectBody(body: unknown): Record<string, unknown> {
    if (!isObject(body)) throw bad('request body must be a JSON object');
    return body;
  }

  function upsertNamespace(name: string, raw: unknown) {
    const body = objectBody(raw);
    const kind = requiredEnum(body, 'kind', NAMESPACE_KINDS);
    const expires_at = optionalDateTime(body, 'expires_at');
    const metadata = optionalObject(body, 'metadata');
    const ns: PluginNamespace = {
      name,
      kind,
      ...(expires_at !== undefined ? { expires_at } : {}),
      ...(metadata !== undefined ? { metadata } : {}),
      created_at: namespaces.get(name)?.created_at ?? new Date().toISOString(),
    };
    namespaces.set(name, ns);
    return { status: 200, json: namespaceJson(ns) };
  }

  function patchNamespace(name: string, raw: unknown) {
    const body = objectBody(raw);
    const expires_at = optionalDateTime(body, 'expires_at');
    const metadata = optionalObject(body, 'metadata');
    if (expires_at === undefined && metadata === undefined) throw bad('patch has no fields set');
    const ns = namespaces.get(name);
    if (!ns) throw notFound('namespace not found');
    if (expires_at !== undefined) ns.expires_at = expires_at;
    if (metadata !== undefined) ns.metadata = metadata;
    return { status: 200, json: namespaceJson(ns) };
  }

  function deleteNamespace(name: string) {
    if (!namespaces.delete(name)) throw notFound('namespace not found');
    for (const [id, m] of memories) if (m.namespace === name) memories.delete(id);
    return { status: 204 };
  }

  function commit(name: string, raw: unknown) {
    const body = objectBody(raw);
    let id: string | undefined;
    if (body.id !== undefined && body.id !== null && body.id !== '') {
      if (typeof body.id !== 'string' || !UUID.test(body.id)) throw bad('id must be a UUID');
      id = body.id.toLowerCase();
    }
    if (typeof body.content !== 'string') throw bad('content is required and must be a string');
    if (body.content.trim() === '') throw bad('content is empty');
    const kind = requiredEnum(body, 'kind', MEMORY_KINDS);
    const source = requiredEnum(body, 'source', MEMORY_SOURCES);
    const expires_at = optionalDateTime(body, 'expires_at');
    const propagation = optionalObject(body, 'propagation');
    if (body.pin !== undefined && body.pin !== null && typeof body.pin !== 'boolean') throw bad('pin must be a boolean');
    const embedding = optionalVector(body, 'embedding', opts.embeddingDims);
    if (!namespaces.has(name)) throw notFound('namespace not found');
    id ??= randomUUID();
    const previous = memories.get(id);
    memories.set(id, {
      id,
      namespace: name,
      content: body.content,
      kind,
      source,
      ...(expires_at !== undefined ? { expires_at } : {}),
      ...(propagation !== undefined ? { propagation } : {}),
      pin: body.pin === true,
      ...(embedding !== undefined ? { embedding } : {}),
      created_at: previous?.created_at ?? new Date().toISOString(),
      seq: previous?.seq ?? ++seq,
    });
    return { status: 201, json: { id, namespace: name } };
  }

  function search(raw: unknown) {
    const body = objectBody(raw);
    const names = body.namespaces;
    if (!Array.isArray(names) || names.length === 0) throw bad('namespaces must be a non-empty array');
    for (const n of names) {
      if (typeof n !== 'string') throw bad('namespaces must be strings');
      const err = namespaceNameError(n);
      if (err) throw bad(err);
    }
    if (body.query !== undefined && body.query !== null && typeof body.query !== 'string') throw bad('query must be a string');
    const query = typeof body.query === 'string' ? body.query : '';
    let kinds: string[] = [];
    if (body.kinds !== undefined && body.kinds !== null) {
      if (!Array.isArray(body.kinds)) throw bad('kinds must be an array');
      for (const k of body.kinds) if (typeof k !== 'string' || !MEMORY_KINDS.includes(k)) throw bad(`kind ${JSON.stringify(k)} is not one of ${MEMORY_KINDS.join(', ')}`);
      kinds = body.kinds as string[];
    }
    let limit = 20;
    if (body.limit !== undefined && body.limit !== null) {
      if (typeof body.limit !== 'number' || !Number.isInteger(body.limit)) throw bad('limit must be an integer');
      if (body.limit < 1 || body.limit > 100) throw bad(`limit ${body.limit} out of range [1,100]`);
      limit = body.limit;
    }
    const embedding = optionalVector(body, 'embedding', opts.embeddingDims);
    const now = Date.now();
    const wanted = new Set(names as string[]);
    let rows = [...memories.values()].filter((m) => wanted.has(m.namespace) && !isExpired(m, now) && (kinds.length === 0 || kinds.includes(m.kind)));
    let scored: { m: PluginMemory; score?: number }[];
    if (embedding) {
      scored = rows.filter((m) => m.embedding && m.embedding.length === embedding.length).map((m) => ({ m, score: cosine(m.embedding!, embedding) }));
      scored.sort((a, b) => Number(b.m.pin) - Number(a.m.pin) || b.score! - a.score!);
    } else if (Buffer.byteLength(query, 'utf8') >= 2) {
      const terms = words(query);
      scored = [];
      for (const m of rows) {
        const have = words(m.content);
        if (terms.length === 0 || !terms.every((t) => have.includes(t))) continue;
        scored.push({ m, score: terms.reduce((s, t) => s + have.filter((w) => w === t).length, 0) / have.length });
      }
      scored.sort((a, b) => Number(b.m.pin) - Number(a.m.pin) || b.score! - a.score!);
    } else {
      if (query.length > 0) rows = rows.filter((m) => m.content.toLowerCase().includes(query.toLowerCase()));
      scored = rows.map((m) => ({ m }));
      scored.sort((a, b) => Number(b.m.pin) - Number(a.m.pin) || b.m.created_at.localeCompare(a.m.created_at) || b.m.seq - a.m.seq);
    }
    return { status: 200, json: { memories: scored.slice(0, limit).map(({ m, score }) => memoryJson(m, score)) } };
  }

  function forget(id: string, raw: unknown) {
    const body = objectBody(raw);
    const ns = body.requested_by_namespace;
    if (typeof ns !== 'string') throw bad('requested_by_namespace is required');
    const err = namespaceNameError(ns);
    if (err) throw bad(err);
    const m = memories.get(id.toLowerCase());
    if (!m || m.namespace !== ns) throw notFound('memory not found in namespace');
    memories.delete(m.id);
    return { status: 204 };
  }

  function send(res: ServerResponse, status: number, json?: unknown): void {
    if (json === undefined) {
      res.writeHead(status).end();
      return;
    }
    const text = JSON.stringify(json);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  }

  function readBody(req: IncomingMessage): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      // Past the limit the rest is read and dropped, so the 413 reaches the client.
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= MAX_BODY) chunks.push(c);
      });
      req.on('end', () => {
        if (size > MAX_BODY) reject(new HttpError(413, 'bad_request', 'request body too large'));
        else resolve(size === 0 ? undefined : Buffer.concat(chunks).toString('utf8'));
      });
      req.on('error', reject);
    });
  }

  const server = createServer(async (req, res) => {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0]!;
    const record: PluginRequest = { method, path, status: 0 };
    requests.push(record);
    try {
      const text = await readBody(req);
      let body: unknown;
      let invalidJson = false;
      if (text !== undefined) {
        try {
          body = JSON.parse(text);
        } catch {
          invalidJson = true;
        }
      }
      if (body !== undefined) record.body = body;
      const view = { method, path, body };
      const queued = failQueue.find((f) => f.n > 0 && f.match(view));
      if (queued) {
        queued.n--;
        record.status = queued.status;
        send(res, queued.status, { code: queued.status >= 500 ? (queued.status === 503 ? 'unavailable' : 'internal') : queued.status === 404 ? 'not_found' : 'bad_request', message: 'injected fault' });
        return;
      }
      const answer = fault ? await fault(view) : undefined;
      if (answer && 'drop' in answer) {
        req.socket.destroy();
        return;
      }
      if (answer && 'hold' in answer) {
        await answer.hold;
      } else if (answer) {
        record.status = answer.status;
        send(res, answer.status, answer.body ?? { code: answer.status >= 500 ? 'internal' : 'bad_request', message: 'injected fault' });
        return;
      }
      if (invalidJson) throw bad('invalid JSON');
      const out = handle(method, path, body, req.headers.authorization);
      record.status = out.status;
      send(res, out.status, out.json);
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, 'internal', err instanceof Error ? err.message : String(err));
      record.status = e.status;
      if (!res.headersSent && !res.destroyed) send(res, e.status, { code: e.code, message: e.message });
    }
  });
  // Idle keep-alive sockets stay open longer than a client's pauses between batches on a
  // loaded test machine, so a reset of one closing under a request is rare.
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    namespaces,
    memories,
    requests,
    storeDown: () => void (down = true),
    storeUp: () => void (down = false),
    failNext(n, status, match = (r) => r.path !== '/v1/health') {
      failQueue.push({ n, status, match });
    },
    setFault(fn) {
      fault = fn;
    },
    writes: () => requests.filter((r) => r.method === 'PUT' || r.method === 'PATCH' || r.method === 'DELETE' || (r.method === 'POST' && r.path.endsWith('/memories'))),
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
