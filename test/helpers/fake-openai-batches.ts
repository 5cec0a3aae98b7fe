// The Files and Batches endpoints of the local OpenAI fake (fake-openai.ts mounts them with
// the `batches` option): uploads (multipart, purpose=batch), batches for /v1/embeddings that
// run a given number of polls, then end completed, expired or cancelled, output and error
// files in OpenAI's line format, and listing newest first with `after` paging. Vectors come
// from the same function as the online endpoint, so a batch answer equals the online one.
import type { IncomingMessage } from 'node:http';

export interface FakeBatchOutcome {
  status: 'completed' | 'expired' | 'cancelled';
  /** Lines answered before the batch expired or was cancelled (default: none). */
  finished?: number;
}

export interface FakeBatchesOptions {
  /** Polls a batch answers in_progress before it ends (default 1). */
  pollsInProgress?: number;
  /** How the n-th batch created (1-based) ends (default: completed). */
  outcome?: (n: number, lines: number) => FakeBatchOutcome | undefined;
  /** A request line answered with a 400 (its inputs are refused). */
  failLine?: (customId: string, body: any) => boolean;
  /** Called once a batch is created, before the answer is sent; the answer waits for the promise. */
  onBatchCreated?: (batch: FakeBatch) => Promise<unknown> | void;
}

export interface FakeFile {
  id: string;
  purpose: string;
  filename: string;
  content: string;
}

export interface FakeBatch {
  id: string;
  n: number;
  inputFileId: string;
  metadata: Record<string, string>;
  status: string;
  polls: number;
  lines: any[];
  outputFileId: string | null;
  errorFileId: string | null;
  completed: number;
  failed: number;
  createdAt: number;
}

export interface FakeBatches {
  /** Uploaded files (purpose batch), in order; `lines` their request lines. */
  readonly uploads: Array<FakeFile & { lines: number }>;
  readonly batches: FakeBatch[];
  readonly filesCreated: number;
  readonly batchesCreated: number;
  setOptions(o: Partial<FakeBatchesOptions>): void;
  reset(): void;
  /** Handles /v1/files* and /v1/batches*; false for any other route. */
  handle(
    req: IncomingMessage,
    raw: Buffer,
    reply: (status: number, body: unknown) => void,
    replyText: (status: number, text: string) => void,
  ): Promise<boolean>;
}

export interface FakeBatchesDeps {
  vector: (model: string, text: string, dimensions: number) => Float32Array;
  toBase64: (v: Float32Array) => string;
  tokens: (text: string) => number;
  models: () => Record<string, number>;
}

export function createFakeBatches(deps: FakeBatchesDeps, initial: FakeBatchesOptions = {}): FakeBatches {
  let opts: FakeBatchesOptions = { ...initial };
  const files = new Map<string, FakeFile>();
  const uploads: Array<FakeFile & { lines: number }> = [];
  const batches: FakeBatch[] = [];
  let fileSeq = 0;
  let batchSeq = 0;

  const err = (message: string) => ({ error: { message, type: 'invalid_request_error', param: null, code: null } });

  const view = (b: FakeBatch) => ({
    id: b.id,
    object: 'batch',
    endpoint: '/v1/embeddings',
    errors: null,
    input_file_id: b.inputFileId,
    completion_window: '24h',
    status: b.status,
    output_file_id: b.outputFileId,
    error_file_id: b.errorFileId,
    created_at: b.createdAt,
    request_counts: { total: b.lines.length, completed: b.completed, failed: b.failed },
    metadata: b.metadata,
  });

  const newFile = (purpose: string, filename: string, content: string): FakeFile => {
    const f = { id: `file-fake${++fileSeq}`, purpose, filename, content };
    files.set(f.id, f);
    return f;
  };

  const answer = (line: any) => {
    const body = line.body ?? {};
    const model = String(body.model ?? '');
    const native = deps.models()[model];
    const inputs: string[] = Array.isArray(body.input) ? body.input : [String(body.input ?? '')];
    if (native === undefined) return { status_code: 404, body: err(`The model \`${model}\` does not exist`) };
    if (opts.failLine?.(String(line.custom_id), body)) return { status_code: 400, body: err('Invalid input: refused by the test server.') };
    const dims = body.dimensions ?? native;
    const base64 = body.encoding_format === 'base64';
    const data = inputs.map((text, index) => {
      const v = deps.vector(model, text, dims);
      return { object: 'embedding', index, embedding: base64 ? deps.toBase64(v) : Array.from(v) };
    });
    const total = inputs.reduce((a, t) => a + deps.tokens(t), 0);
    return { status_code: 200, body: { object: 'list', data, model, usage: { prompt_tokens: total, total_tokens: total } } };
  };

  /** Runs the batch to its end: which lines are answered, the output and error files. */
  const end = (b: FakeBatch) => {
    const outcome = opts.outcome?.(b.n, b.lines.length) ?? { status: 'completed' as const };
    const upTo = outcome.status === 'completed' ? b.lines.length : Math.min(b.lines.length, outcome.finished ?? 0);
    const out: string[] = [];
    const errors: string[] = [];
    b.lines.forEach((line, k) => {
      const id = `batch_req_${b.n}_${k}`;
      if (k >= upTo) {
        // OpenAI writes the unfinished requests of an expired batch to its error file; those of a
        // cancelled one are simply absent (both shapes are read the same way).
        if (outcome.status === 'expired') {
          errors.push(JSON.stringify({ id, custom_id: line.custom_id, response: null, error: { code: 'batch_expired', message: 'This request could not be executed before the completion window expired.' } }));
        }
        return;
      }
      const response = answer(line);
      const text = JSON.stringify({ id, custom_id: line.custom_id, response: { ...response, request_id: `req_${id}` }, error: null });
      if (response.status_code === 200) {
        out.push(text);
        b.completed++;
      } else {
        errors.push(text);
        b.failed++;
      }
    });
    b.status = outcome.status;
    if (out.length > 0) b.outputFileId = newFile('batch_output', `${b.id}_output.jsonl`, out.join('\n') + '\n').id;
    if (errors.length > 0) b.errorFileId = newFile('batch_output', `${b.id}_error.jsonl`, errors.join('\n') + '\n').id;
  };

  return {
    uploads,
    batches,
    get filesCreated() {
      return uploads.length;
    },
    get batchesCreated() {
      return batches.length;
    },
    setOptions(o) {
      opts = { ...opts, ...o };
    },
    reset() {
      uploads.length = 0;
      batches.length = 0;
      files.clear();
      fileSeq = 0;
      batchSeq = 0;
    },
    async handle(req, raw, reply, replyText) {
      const url = new URL(req.url ?? '/', 'http://fake');
      const path = url.pathname;
      const method = req.method ?? '';
      if (method === 'POST' && path === '/v1/files') {
        const form = await new Request('http://fake/v1/files', {
          method: 'POST',
          headers: { 'content-type': String(req.headers['content-type'] ?? '') },
          body: new Uint8Array(raw),
        }).formData();
        const file = form.get('file');
        const purpose = String(form.get('purpose') ?? '');
        if (!(file instanceof Blob) || purpose !== 'batch') {
          reply(400, err('a file with purpose "batch" is required'));
          return true;
        }
        const content = await file.text();
        const f = newFile(purpose, (file as File).name ?? 'upload.jsonl', content);
        uploads.push({ ...f, lines: content.split('\n').filter((l) => l.trim()).length });
        reply(200, { id: f.id, object: 'file', bytes: Buffer.byteLength(content), created_at: 0, filename: f.filename, purpose });
        return true;
      }
      const content = /^\/v1\/files\/([^/]+)\/content$/.exec(path);
      if (method === 'GET' && content) {
        const f = files.get(content[1]!);
        if (!f) reply(404, err(`No such File object: ${content[1]}`));
        else replyText(200, f.content);
        return true;
      }
      if (method === 'POST' && path === '/v1/batches') {
        const body = JSON.parse(raw.toString('utf8') || '{}');
        const input = files.get(String(body.input_file_id));
        if (!input || body.endpoint !== '/v1/embeddings' || body.completion_window !== '24h') {
          reply(400, err('invalid batch: input_file_id, endpoint /v1/embeddings and completion_window 24h are required'));
          return true;
        }
        const lines = input.content.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
        const b: FakeBatch = {
          id: `batch_fake${++batchSeq}`,
          n: batchSeq,
          inputFileId: input.id,
          metadata: body.metadata ?? {},
          status: 'validating',
          polls: 0,
          lines,
          outputFileId: null,
          errorFileId: null,
          completed: 0,
          failed: 0,
          createdAt: Math.floor(Date.now() / 1000),
        };
        batches.push(b);
        await opts.onBatchCreated?.(b);
        reply(200, view(b));
        return true;
      }
      const one = /^\/v1\/batches\/([^/]+)$/.exec(path);
      if (method === 'GET' && one) {
        const b = batches.find((x) => x.id === one[1]);
        if (!b) {
          reply(404, err(`No batch found with id '${one[1]}'`));
          return true;
        }
        if (b.status === 'validating' || b.status === 'in_progress') {
          b.polls++;
          if (b.polls <= (opts.pollsInProgress ?? 1)) b.status = 'in_progress';
          else end(b);
        }
        reply(200, view(b));
        return true;
      }
      if (method === 'GET' && path === '/v1/batches') {
        const limit = Number(url.searchParams.get('limit') ?? 20);
        const after = url.searchParams.get('after');
        const newestFirst = [...batches].reverse();
        const start = after ? newestFirst.findIndex((b) => b.id === after) + 1 : 0;
        const page = newestFirst.slice(start, start + limit);
        reply(200, {
          object: 'list',
          data: page.map(view),
          first_id: page[0]?.id ?? null,
          last_id: page[page.length - 1]?.id ?? null,
          has_more: start + limit < newestFirst.length,
        });
        return true;
      }
      return false;
    },
  };
}
