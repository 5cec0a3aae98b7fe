// Preloaded into the CLI by `npm run bench -- --scale` (node --import): writes the process's
// own CPU time and peak RSS to $BENCH_USAGE_FILE when it exits, however it exits.
import { writeFileSync } from 'node:fs';

const file = process.env.BENCH_USAGE_FILE;
if (file) {
  process.on('exit', () => {
    const cpu = process.cpuUsage();
    writeFileSync(file, JSON.stringify({ cpuMicros: cpu.user + cpu.system, maxRssKb: process.resourceUsage().maxRSS }));
  });
}
