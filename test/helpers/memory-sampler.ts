// Preloaded into the CLI by test/e2e/memory-growth.test.ts (node --expose-gc --import): every
// 250 ms a full GC, then the process's memory; the peaks go to $MEMORY_SAMPLE_FILE at exit.
// After a full GC, heapUsed is the JavaScript state the process holds (garbage not yet collected
// is not) and external its Buffers and, under PGlite, the embedded database's memory.
import { writeFileSync } from 'node:fs';

const file = process.env['MEMORY_SAMPLE_FILE'];
const collect = (globalThis as { gc?: () => void }).gc;
if (file && collect) {
  const peak = { heapMb: 0, externalMb: 0, rssMb: 0 };
  const sample = () => {
    collect();
    const m = process.memoryUsage();
    peak.heapMb = Math.max(peak.heapMb, m.heapUsed / 2 ** 20);
    peak.externalMb = Math.max(peak.externalMb, m.external / 2 ** 20);
    peak.rssMb = Math.max(peak.rssMb, m.rss / 2 ** 20);
  };
  setInterval(sample, 250).unref();
  process.on('exit', () => {
    sample();
    writeFileSync(file, JSON.stringify(peak));
  });
}
