import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { SpawnOptions, Wire } from '../src/index.js';

// dist/test/helpers.js -> repository root
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const FIXTURES = join(ROOT, 'protocol/conformance/fixtures');
export const DATA = join(ROOT, '..', 'shared', 'data');
export const PYTHON = process.env.LIVERYID_PYTHON ?? join(ROOT, '.venv/bin/python');
export const WIRES: Wire[] = ['json', 'msgpack'];

/** The real Python sidecar from this checkout (build.py sets LIVERYID_PYTHON). */
export function sidecarOptions(wire: Wire, extra: Partial<SpawnOptions> = {}): SpawnOptions {
  return { command: PYTHON, args: ['-m', 'sidecar'], cwd: ROOT, wire, ...extra };
}

export function devPhoto(relative: string): string | undefined {
  const path = join(DATA, relative);
  return existsSync(path) ? path : undefined;
}

/** A 48-megapixel noise JPEG, slow enough to decode that a cancel lands mid-request. */
export function slowJpeg(): string {
  const path = join(mkdtempSync(join(tmpdir(), 'liveryid-js-')), 'big.jpg');
  execFileSync(PYTHON, [
    '-c',
    'import sys, cv2, numpy as np; ' +
      'cv2.imwrite(sys.argv[1], np.random.default_rng(0).integers(0, 256, (6000, 8000, 3), dtype=np.uint8))',
    path,
  ]);
  return path;
}
