// The response bodies of the contract, as JSON: optional fields are left out when unset
// (the Go bindings' omitempty), never sent as null; date-times are RFC 3339 in UTC.
import type { NamespaceKind } from '../plugin-namespace.js';
import type { MemoryKind, MemorySource } from './validation.js';

export const CONTRACT_VERSION = '1.0.0';

export type Capability = 'fts' | 'embedding' | 'ttl' | 'pin' | 'propagation';

export interface HealthResponse {
  status: 'ok' | 'degraded';
  version: string;
  capabilities: Capability[];
}

export interface NamespaceJson {
  name: string;
  kind: NamespaceKind;
  expires_at?: string;
  metadata?: Record<string, unknown>;
  created_at: string;
}

export interface MemoryJson {
  id: string;
  namespace: string;
  content: string;
  kind: MemoryKind;
  source: MemorySource;
  expires_at?: string;
  propagation?: Record<string, unknown>;
  pin?: boolean;
  created_at: string;
  score?: number;
}

export interface MemoryWriteResponse {
  id: string;
  namespace: string;
}

export function isoTime(value: Date | string): string {
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

export function namespaceJson(r: { name: string; kind: NamespaceKind; expires_at: Date | null; metadata: unknown; created_at: Date }): NamespaceJson {
  return {
    name: r.name,
    kind: r.kind,
    ...(r.expires_at ? { expires_at: isoTime(r.expires_at) } : {}),
    ...(r.metadata !== null && r.metadata !== undefined ? { metadata: parseJsonb(r.metadata) as Record<string, unknown> } : {}),
    created_at: isoTime(r.created_at),
  };
}

/** A jsonb value as the driver returns it: parsed already (postgres.js, PGlite) or as text. */
export function parseJsonb(v: unknown): unknown {
  return typeof v === 'string' ? JSON.parse(v) : v;
}
