// The contract's request bodies, checked field by field as its Validate() methods and the
// OpenAPI schema say (enums, required fields, limits, namespace names), plus what a fixed
// vector column needs (the embedding's width). Every failure is a 400 `bad_request` whose
// message names the field. Unknown fields are ignored, as the reference plugin does.
import { namespaceNameProblem, type NamespaceKind } from '../plugin-namespace.js';
import { badRequest } from './errors.js';

export const NAMESPACE_KINDS: readonly NamespaceKind[] = ['workspace', 'team', 'org', 'custom'];
export const MEMORY_KINDS = ['fact', 'summary', 'checkpoint'] as const;
export const MEMORY_SOURCES = ['agent', 'runtime', 'user'] as const;
export type MemoryKind = (typeof MEMORY_KINDS)[number];
export type MemorySource = (typeof MEMORY_SOURCES)[number];

export const DEFAULT_SEARCH_LIMIT = 20;
export const MAX_SEARCH_LIMIT = 100;

export interface NamespaceUpsert {
  kind: NamespaceKind;
  expiresAt: string | null;
  metadata: Record<string, unknown> | null;
}

export interface NamespacePatch {
  /** undefined: leave as it is. */
  expiresAt?: string;
  metadata?: Record<string, unknown>;
}

export interface MemoryWrite {
  /** Lower-case UUID when the caller gave one (an upsert), else undefined (a new row). */
  id?: string;
  content: string;
  kind: MemoryKind;
  source: MemorySource;
  expiresAt: string | null;
  propagation: Record<string, unknown> | null;
  pin: boolean;
  embedding: number[] | null;
}

export interface SearchRequest {
  namespaces: string[];
  query: string;
  kinds: MemoryKind[];
  limit: number;
  embedding: number[] | null;
}

export interface ForgetRequest {
  requestedByNamespace: string;
}

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
// RFC 3339 as Go's time.Time accepts it in JSON: a full date, a time, and a zone (Z or ±hh:mm).
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

export function checkNamespaceName(name: string): string {
  const problem = namespaceNameProblem(name);
  if (problem) throw badRequest(problem);
  return name;
}

export function isUuid(s: string): boolean {
  return UUID.test(s);
}

function objectBody(body: unknown): Record<string, unknown> {
  if (body === undefined) throw badRequest('the request needs a JSON object body');
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  return body;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function dateTime(body: Record<string, unknown>, field: string): string | null {
  const v = body[field];
  if (!present(v)) return null;
  if (typeof v !== 'string' || !DATE_TIME.test(v) || Number.isNaN(Date.parse(v))) {
    throw badRequest(`${field} must be an RFC 3339 date-time such as 2026-01-02T15:04:05Z, not ${JSON.stringify(v)}`);
  }
  return v;
}

function object(body: Record<string, unknown>, field: string): Record<string, unknown> | null {
  const v = body[field];
  if (!present(v)) return null;
  if (!isObject(v)) throw badRequest(`${field} must be a JSON object`);
  return v;
}

function oneOf<T extends string>(body: Record<string, unknown>, field: string, values: readonly T[]): T {
  const v = body[field];
  if (!present(v) || v === '') throw badRequest(`${field} is required (one of ${values.join(', ')})`);
  if (typeof v !== 'string' || !values.includes(v as T)) throw badRequest(`${field} ${JSON.stringify(v)} is not one of ${values.join(', ')}`);
  return v as T;
}

/** An optional vector; an empty one is no vector (as the reference treats it). */
function vector(body: Record<string, unknown>, field: string, width: number): number[] | null {
  const v = body[field];
  if (!present(v)) return null;
  if (!Array.isArray(v)) throw badRequest(`${field} must be an array of numbers`);
  if (v.length === 0) return null;
  if (v.length !== width) throw badRequest(`${field} has ${v.length} dimensions but this plugin stores vectors of ${width}`);
  for (const x of v) {
    if (typeof x !== 'number' || !Number.isFinite(x)) throw badRequest(`${field} must be an array of finite numbers`);
  }
  return v as number[];
}

export function parseNamespaceUpsert(raw: unknown): NamespaceUpsert {
  const body = objectBody(raw);
  return { kind: oneOf(body, 'kind', NAMESPACE_KINDS), expiresAt: dateTime(body, 'expires_at'), metadata: object(body, 'metadata') };
}

export function parseNamespacePatch(raw: unknown): NamespacePatch {
  const body = objectBody(raw);
  const expiresAt = dateTime(body, 'expires_at');
  const metadata = object(body, 'metadata');
  if (expiresAt === null && metadata === null) throw badRequest('patch has no fields set');
  return { ...(expiresAt !== null ? { expiresAt } : {}), ...(metadata !== null ? { metadata } : {}) };
}

export function parseMemoryWrite(raw: unknown, width: number): MemoryWrite {
  const body = objectBody(raw);
  let id: string | undefined;
  if (present(body['id']) && body['id'] !== '') {
    const v = body['id'];
    if (typeof v !== 'string' || !isUuid(v)) throw badRequest(`id must be a UUID, not ${JSON.stringify(v)}`);
    id = v.toLowerCase();
  }
  const content = body['content'];
  if (!present(content)) throw badRequest('content is required');
  if (typeof content !== 'string') throw badRequest('content must be a string');
  if (content.trim() === '') throw badRequest('content is empty');
  const pin = body['pin'];
  if (present(pin) && typeof pin !== 'boolean') throw badRequest('pin must be true or false');
  return {
    ...(id !== undefined ? { id } : {}),
    content,
    kind: oneOf(body, 'kind', MEMORY_KINDS),
    source: oneOf(body, 'source', MEMORY_SOURCES),
    expiresAt: dateTime(body, 'expires_at'),
    propagation: object(body, 'propagation'),
    pin: pin === true,
    embedding: vector(body, 'embedding', width),
  };
}

export function parseSearchRequest(raw: unknown, width: number): SearchRequest {
  const body = objectBody(raw);
  const names = body['namespaces'];
  if (!Array.isArray(names) || names.length === 0) throw badRequest('namespaces must be a non-empty array of namespace names');
  for (const n of names) {
    if (typeof n !== 'string') throw badRequest('namespaces must be an array of strings');
    checkNamespaceName(n);
  }
  const query = body['query'];
  if (present(query) && typeof query !== 'string') throw badRequest('query must be a string');
  const kinds = body['kinds'];
  if (present(kinds)) {
    if (!Array.isArray(kinds)) throw badRequest('kinds must be an array');
    for (const k of kinds) {
      if (typeof k !== 'string' || !(MEMORY_KINDS as readonly string[]).includes(k)) {
        throw badRequest(`kinds: ${JSON.stringify(k)} is not one of ${MEMORY_KINDS.join(', ')}`);
      }
    }
  }
  const limit = body['limit'];
  if (present(limit)) {
    if (typeof limit !== 'number' || !Number.isInteger(limit)) throw badRequest('limit must be a whole number');
    // The spec's minimum is 1 (the reference's Go Validate() also lets 0 mean the default).
    if (limit < 1 || limit > MAX_SEARCH_LIMIT) throw badRequest(`limit ${limit} out of range [1,${MAX_SEARCH_LIMIT}]`);
  }
  return {
    namespaces: [...new Set(names as string[])],
    query: typeof query === 'string' ? query : '',
    kinds: present(kinds) ? [...new Set(kinds as MemoryKind[])] : [],
    limit: present(limit) ? (limit as number) : DEFAULT_SEARCH_LIMIT,
    embedding: vector(body, 'embedding', width),
  };
}

export function parseForgetRequest(raw: unknown): ForgetRequest {
  const body = objectBody(raw);
  const ns = body['requested_by_namespace'];
  if (!present(ns) || ns === '') throw badRequest('requested_by_namespace is required');
  if (typeof ns !== 'string') throw badRequest('requested_by_namespace must be a string');
  return { requestedByNamespace: checkNamespaceName(ns) };
}
