// Throughput of the PGCOPY binary encoder alone (no database): 20,000 rows with a 1536-d
// embedding, as Float32Array and as number[], plus a memory-shaped row.
//   npm run build && node dist/scripts/bench-encoder.js [rows] [dims]
import { BinaryCopyWriter, type CopyColumnType } from '../src/postgres/copy-binary.js';

const rows = Number(process.argv[2] ?? 20_000);
const dims = Number(process.argv[3] ?? 1536);

const pool: Float32Array[] = [];
for (let i = 0; i < 64; i++) {
  const v = new Float32Array(dims);
  for (let j = 0; j < dims; j++) v[j] = Math.random() * 2 - 1;
  pool.push(v);
}
const poolArrays = pool.map((v) => Array.from(v));
const content = 'The user prefers oat milk in their flat white; remembered from a chat about café orders. '.repeat(4);

function run(name: string, types: CopyColumnType[], row: (i: number) => unknown[]) {
  const w = new BinaryCopyWriter(types, 1 << 20);
  const once = () => {
    w.reset();
    for (let i = 0; i < rows; i++) w.addRow(row(i));
    return w.finish().byteLength;
  };
  once(); // warm up (and grow the buffer once)
  const t0 = process.hrtime.bigint();
  const reps = 3;
  let bytes = 0;
  for (let r = 0; r < reps; r++) bytes = once();
  const s = Number(process.hrtime.bigint() - t0) / 1e9 / reps;
  console.log(
    `${name.padEnd(38)} ${Math.round(rows / s).toLocaleString('en-US').padStart(9)} rows/s  ` +
      `${(bytes / s / 1e6).toFixed(0).padStart(5)} MB/s  (${(bytes / 1e6).toFixed(1)} MB per ${rows} rows)`,
  );
}

console.log(`encoding ${rows} rows of ${dims}-d vectors, mean of 3 warm runs`);
run('id + vector (Float32Array)', ['int4', 'vector'], (i) => [i, pool[i & 63]]);
run('id + vector (number[])', ['int4', 'vector'], (i) => [i, poolArrays[i & 63]]);
run('id + halfvec (Float32Array)', ['int4', 'halfvec'], (i) => [i, pool[i & 63]]);
const created = new Date();
run(
  'memory row (text, jsonb, ts, vector)',
  ['text', 'text', 'text', 'vector', 'jsonb', 'float8', 'int4', 'timestamptz', 'timestamptz'],
  (i) => [`mem-${i}`, 'user-1', content, pool[i & 63], { source: 'sqlite', tags: ['a', 'b'] }, 0.5, i, created, created],
);
