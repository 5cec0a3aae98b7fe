// Which of the seven operations a method and path name, as the reference plugin routes
// them: an unknown path is 404 `no route`; a namespace path with another method is 405; an
// empty namespace name or memory id is 400. Path segments are percent-decoded (clients leave
// `:` as it is, but may encode it).
import { PluginError, badRequest, notFound } from './errors.js';

export type Route =
  | { op: 'health' }
  | { op: 'upsertNamespace' | 'patchNamespace' | 'deleteNamespace'; name: string }
  | { op: 'commit'; name: string }
  | { op: 'search' }
  | { op: 'forget'; id: string };

export function route(method: string, path: string): Route {
  if (path === '/v1/health') {
    if (method === 'GET') return { op: 'health' };
    throw notFound('no route');
  }
  if (path === '/v1/search') {
    if (method === 'POST') return { op: 'search' };
    throw notFound('no route');
  }
  if (path.startsWith('/v1/namespaces/')) {
    const [rawName, ...rest] = path.slice('/v1/namespaces/'.length).split('/');
    const name = decode(rawName!);
    if (rest.length > 0) {
      if (rest.length === 1 && rest[0] === 'memories' && method === 'POST') {
        if (name === '') throw badRequest('namespace name missing');
        return { op: 'commit', name };
      }
      throw notFound('no route');
    }
    if (name === '') throw badRequest('namespace name missing');
    if (method === 'PUT') return { op: 'upsertNamespace', name };
    if (method === 'PATCH') return { op: 'patchNamespace', name };
    if (method === 'DELETE') return { op: 'deleteNamespace', name };
    throw new PluginError(405, 'bad_request', 'method not allowed');
  }
  if (path.startsWith('/v1/memories/')) {
    const raw = path.slice('/v1/memories/'.length);
    if (method !== 'DELETE' || raw.includes('/')) throw notFound('no route');
    const id = decode(raw);
    if (id === '') throw badRequest('memory id missing');
    return { op: 'forget', id };
  }
  throw notFound('no route');
}

function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw badRequest(`the path segment ${JSON.stringify(segment)} is not valid percent-encoding`);
  }
}
