// Round-trip latency of `ping` over each wire, measured from Node through the
// public client (spawn, frame, match the response), as the app would see it.
//   node bench/ping.mjs [count]     (after `npm run build`; uses ../.venv)
import { join } from 'node:path';
import { Engine } from '../dist/src/index.js';

const root = new URL('../..', import.meta.url).pathname;
const count = Number(process.argv[2] ?? 2000);
const python = process.env.LIVERYID_PYTHON ?? join(root, '.venv/bin/python');

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

console.log(`ping round trip from Node, ${count} sequential calls after 200 warm-up calls`);
console.log('| wire | p50 ms | p90 ms | p99 ms | mean ms |');
console.log('|---|---|---|---|---|');
for (const wire of ['json', 'msgpack']) {
  const engine = await Engine.spawn({ command: python, args: ['-m', 'sidecar'], cwd: root, wire });
  for (let i = 0; i < 200; i++) await engine.ping();
  const times = [];
  for (let i = 0; i < count; i++) {
    const start = process.hrtime.bigint();
    await engine.ping();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  await engine.close();
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const row = [50, 90, 99].map((p) => percentile(times, p).toFixed(3));
  console.log(`| ${wire} | ${row.join(' | ')} | ${mean.toFixed(3)} |`);
}
