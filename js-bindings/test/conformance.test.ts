// Replays protocol/conformance/vectors.jsonl in order over one sidecar per
// wire, exactly as tests/test_conformance.py does on the Python side.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { createDecoder, encodeFrame, type Wire } from '../src/framing.js';
import { FIXTURES, PYTHON, ROOT, WIRES } from './helpers.js';

interface Vector {
  name: string;
  send?: unknown;
  send_raw?: { json: string; msgpack_hex: string };
  expect: unknown;
}

const vectors: Vector[] = readFileSync(join(ROOT, 'protocol/conformance/vectors.jsonl'), 'utf8')
  .split('\n')
  .filter((line) => line.trim())
  .map((line) => JSON.parse(line) as Vector);

function substitute(value: unknown, tmp: string): unknown {
  if (typeof value === 'string') {
    if (value.startsWith('$SIZE:')) return statSync(join(FIXTURES, value.slice('$SIZE:'.length))).size;
    return value.replaceAll('$FIXTURES', FIXTURES).replaceAll('$TMP', tmp);
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, tmp));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, tmp)]));
  }
  return value;
}

function matches(expected: unknown, actual: unknown, wire: Wire): boolean {
  if (expected === '<vector>') {
    if (wire === 'msgpack') return actual instanceof Uint8Array && actual.byteLength > 0 && actual.byteLength % 4 === 0;
    return Array.isArray(actual) && actual.length > 0 && actual.every((v) => typeof v === 'number');
  }
  if (expected === '<number>') return typeof actual === 'number';
  if (expected === '<string>') return typeof actual === 'string';
  if (expected === '<array>') return Array.isArray(actual);
  if (expected === '<object>') return actual !== null && typeof actual === 'object' && !Array.isArray(actual);
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => matches(e, actual[i], wire));
  }
  if (expected !== null && typeof expected === 'object') {
    if (actual === null || typeof actual !== 'object') return false;
    const record = actual as Record<string, unknown>;
    return Object.entries(expected).every(([k, v]) => k in record && matches(v, record[k], wire));
  }
  return expected === actual;
}

class RawSidecar {
  private readonly child;
  private readonly queue: unknown[] = [];
  private waiter: (() => void) | undefined;

  constructor(readonly wire: Wire) {
    this.child = spawn(PYTHON, ['-m', 'sidecar', 'serve', '--wire', wire], { cwd: ROOT, stdio: ['pipe', 'pipe', 'ignore'] });
    const decoder = createDecoder(wire);
    this.child.stdout.on('data', (chunk: Buffer) => {
      this.queue.push(...decoder.push(chunk)); // a non-protocol byte makes push throw and the test fail
      this.waiter?.();
    });
  }

  write(bytes: Buffer): void {
    this.child.stdin.write(bytes);
  }

  send(message: unknown): void {
    this.write(encodeFrame(this.wire, message));
  }

  async read(): Promise<unknown> {
    while (this.queue.length === 0) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    return this.queue.shift();
  }

  close(): void {
    this.child.kill();
  }
}

function rawFrame(wire: Wire, raw: { json: string; msgpack_hex: string }): Buffer {
  if (wire === 'json') return Buffer.from(raw.json + '\n', 'utf8');
  const body = Buffer.from(raw.msgpack_hex, 'hex');
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  return Buffer.concat([header, body]);
}

for (const wire of WIRES) {
  describe(`conformance vectors over ${wire}`, () => {
    it('all pass in order on one process', async () => {
      const sidecar = new RawSidecar(wire);
      const tmp = mkdtempSync(join(tmpdir(), 'liveryid-conformance-'));
      try {
        for (const vector of vectors) {
          if (vector.send_raw) sidecar.write(rawFrame(wire, vector.send_raw));
          else sidecar.send(substitute(vector.send, tmp));
          if (vector.expect === null) {
            sidecar.send({ jsonrpc: '2.0', id: 'after-silence', method: 'ping' });
            const next = (await sidecar.read()) as { id?: unknown };
            assert.equal(next.id, 'after-silence', `${vector.name}: unexpected response ${JSON.stringify(next)}`);
            continue;
          }
          const response = await sidecar.read();
          assert.ok(matches(vector.expect, response, wire), `${vector.name}: got ${JSON.stringify(response)}`);
        }
      } finally {
        sidecar.close();
      }
    });
  });
}
