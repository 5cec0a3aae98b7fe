// The contract's error envelope ({code, message, details?}) and how a failure becomes one:
// a PluginError says its own status and code; a database that cannot be reached is 503
// `unavailable` (the client's breaker counts it, and the plugin answers again once the
// database is back); anything else is 500 `internal` with a one-line, redacted message.
import { errorMessage, oneLine, sqlState } from '../errors.js';
import { redact } from '../secrets.js';

export type ErrorCode = 'bad_request' | 'not_found' | 'forbidden' | 'internal' | 'unavailable';

export interface ErrorEnvelope {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

export class PluginError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'PluginError';
  }
}

export const badRequest = (message: string) => new PluginError(400, 'bad_request', message);
export const notFound = (message: string) => new PluginError(404, 'not_found', message);

/** Driver codes (postgres.js, Node's net) that mean the connection to the database is gone. */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'STORE_TIMEOUT',
]);

/** True when err says the database cannot be reached (rather than that a statement failed). */
export function isStoreUnreachable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && UNREACHABLE.has(code)) return true;
  const state = sqlState(err);
  // Class 08: connection exception; 57P01-57P03: the server is shutting down or starting.
  return state !== undefined && (state.startsWith('08') || /^57P0[123]$/.test(state));
}

export function toPluginError(err: unknown): PluginError {
  if (err instanceof PluginError) return err;
  const message = redact(oneLine(errorMessage(err)));
  if (isStoreUnreachable(err)) {
    return new PluginError(503, 'unavailable', `the store (PostgreSQL) is unreachable: ${message}; retry once it is back`);
  }
  return new PluginError(500, 'internal', message);
}

export function envelope(err: PluginError): ErrorEnvelope {
  return { code: err.code, message: err.message };
}
