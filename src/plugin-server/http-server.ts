// The HTTP side of serve, on node:http: JSON bodies up to a size limit (413), the bearer
// token on every route but health (401), routing, and every failure as the contract's error
// envelope; a handler's bug is a 500 envelope, never a dropped connection or a crash.
// close() stops taking connections and resolves once the requests in flight are answered.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { BearerToken } from './auth.js';
import { PluginError, badRequest, envelope, toPluginError } from './errors.js';
import type { Handlers } from './handlers.js';
import { route } from './router.js';

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

export interface PluginServerOptions {
  handlers: Handlers;
  token: BearerToken | null;
  maxBodyBytes: number;
  /** Called for a 500: a bug or a store failure the operator should see. */
  onInternalError?: (err: PluginError) => void;
}

export interface PluginServer {
  /** Listens; resolves with the address actually bound (port 0 gets a free port). */
  listen(host: string, port: number): Promise<{ host: string; port: number }>;
  /** Stops accepting, answers the requests in flight, then resolves. */
  close(): Promise<void>;
  readonly requests: number;
}

class BodyTooLarge extends PluginError {
  constructor(limit: number) {
    super(413, 'bad_request', `the request body is larger than ${limit} bytes`);
  }
}

export function createPluginServer(opts: PluginServerOptions): PluginServer {
  let requests = 0;
  let closing = false;
  const sockets = new Set<Socket>();
  const busy = new Set<Socket>();

  const server: Server = createServer((req, res) => {
    requests++;
    busy.add(req.socket);
    res.on('close', () => {
      busy.delete(req.socket);
      // Shutting down: a connection that has answered its request is not kept alive.
      if (closing) req.socket.end();
    });
    serve(req, res).catch((err) => send(res, toPluginError(err)));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // A request the parser cannot read at all still gets an envelope.
  server.on('clientError', (_err, socket) => {
    if (socket.writable) {
      const text = JSON.stringify({ code: 'bad_request', message: 'malformed HTTP request' });
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
    } else socket.destroy();
  });

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0]!;
    let text: string;
    try {
      // The whole body is read first, even for a request that fails, so the answer is never
      // lost to a connection reset while the client is still sending.
      text = await readBody(req, opts.maxBodyBytes);
    } catch (err) {
      return send(res, toPluginError(err));
    }
    try {
      // Before routing: without the token, not even which paths exist is told.
      if (path !== '/v1/health' && opts.token && !opts.token.accepts(req.headers.authorization)) {
        throw new PluginError(401, 'forbidden', 'missing or wrong bearer token: send Authorization: Bearer <token>');
      }
      const r = route(method, path);
      let body: unknown;
      if (text.length > 0) {
        try {
          body = JSON.parse(text);
        } catch {
          throw badRequest('invalid JSON');
        }
      }
      const answer = await opts.handlers.handle(r, body);
      if (answer.body === undefined) {
        res.writeHead(answer.status).end();
      } else {
        const json = JSON.stringify(answer.body);
        res.writeHead(answer.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) }).end(json);
      }
    } catch (err) {
      send(res, toPluginError(err));
    }
  }

  function send(res: ServerResponse, err: PluginError): void {
    if (err.status >= 500 && err.status !== 503) opts.onInternalError?.(err);
    if (res.headersSent || res.destroyed) return;
    const json = JSON.stringify(envelope(err));
    res.writeHead(err.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) }).end(json);
  }

  return {
    get requests() {
      return requests;
    },
    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const a = server.address() as AddressInfo;
          resolve({ host: a.address, port: a.port });
        });
      });
    },
    close() {
      closing = true;
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      // Idle keep-alive connections would hold close() open; busy ones end after their answer.
      for (const s of sockets) if (!busy.has(s)) s.end();
      return done;
    },
  };
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    // Past this, the rest of an oversized body is not worth reading: the connection is cut.
    const drainLimit = Math.max(limit * 64, 64 * 1024 * 1024);
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = Number.isFinite(declared) && declared > limit;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) tooLarge = true;
      if (tooLarge) {
        chunks.length = 0;
        if (size > drainLimit) req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => (tooLarge ? reject(new BodyTooLarge(limit)) : resolve(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}
