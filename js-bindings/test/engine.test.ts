import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Engine, ErrorCode, LiveryidError, SidecarExitedError } from '../src/index.js';
import { FIXTURES, devPhoto, sidecarOptions, slowJpeg, WIRES } from './helpers.js';

const F1_PHOTO = devPhoto('f1-game-teams-dev/ferrari/20200422160656_1.png');
const BLANK = { path: `${FIXTURES}/blank.png` };

for (const wire of WIRES) {
  describe(`Engine over the ${wire} wire`, () => {
    let engine: Engine;
    let slow: string;
    before(async () => {
      engine = await Engine.spawn(sidecarOptions(wire));
      slow = slowJpeg();
    });
    after(() => engine.close());

    it('reports the loaded models at initialize', () => {
      assert.equal(engine.info.server_name, 'liveryid');
      const byName = Object.fromEntries(engine.info.models.map((m) => [m.name, m]));
      assert.equal(byName['liveryid-vehicle-nanodet']?.status, 'loaded');
      assert.equal(byName['liveryid-reid-mnv2']?.output_dim, 1388);
      assert.deepEqual(engine.info.capabilities.wires, ['json', 'msgpack']);
    });

    it('detects a car and embeds its box on a real photo', { skip: F1_PHOTO === undefined && 'no ../shared/data' }, async () => {
      const dets = await engine.detect({ path: F1_PHOTO! });
      assert.ok(dets.length >= 1);
      const [x1, y1, x2, y2] = dets[0]!.box;
      assert.ok(0 <= x1 && x1 < x2 && x2 <= 1920 && 0 <= y1 && y1 < y2 && y2 <= 1080);
      const vec = await engine.embed({ path: F1_PHOTO! }, dets[0]!.box);
      assert.ok(vec instanceof Float32Array);
      assert.equal(vec.length, 1388);
      const norm = Math.hypot(...vec);
      assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);
    });

    it('rejects with the JSON-RPC code and keeps serving', async () => {
      await assert.rejects(engine.detect({ path: '/no/such/photo.jpg' }), (error: unknown) => {
        assert.ok(error instanceof LiveryidError);
        assert.equal(error.code, ErrorCode.ImageUnreadable);
        return true;
      });
      await assert.rejects(engine.embed(BLANK, [5, 5, 1, 1]), { code: ErrorCode.InvalidParams });
      assert.ok((await engine.ping()).uptime_s >= 0);
    });

    it('reports progress stages before resolving', async () => {
      const stages: string[] = [];
      const dets = await engine.detect(BLANK, { onProgress: (p) => stages.push(p.stage) });
      assert.deepEqual(dets, []);
      assert.deepEqual(stages, ['decode', 'detect', 'done']);
    });

    it('cancels a running call through an AbortSignal', async () => {
      const controller = new AbortController();
      const call = engine.detect({ path: slow }, { signal: controller.signal });
      setTimeout(() => controller.abort(), 20);
      await assert.rejects(call, { code: ErrorCode.RequestCancelled });
      assert.ok((await engine.ping()).uptime_s >= 0);
    });

    it('answers ping while a slow call runs', async () => {
      const order: string[] = [];
      const slowCall = engine.detect({ path: slow }).then(() => order.push('detect'));
      await engine.ping().then(() => order.push('ping'));
      await slowCall;
      assert.deepEqual(order, ['ping', 'detect']);
    });
  });
}

describe('Engine when the sidecar dies', () => {
  it('rejects pending calls, and restarts when asked to', async () => {
    const engine = await Engine.spawn(sidecarOptions('json', { restart: true }));
    const firstPid = engine.pid;
    const pending = engine.detect({ path: slowJpeg() });
    process.kill(firstPid!, 'SIGKILL');
    await assert.rejects(pending, (error: unknown) => error instanceof SidecarExitedError && error.signal === 'SIGKILL');
    assert.notEqual(engine.pid, firstPid);
    assert.ok((await engine.ping()).uptime_s >= 0);
    await engine.close();
  });

  it('fails to spawn a missing command with a clear error', async () => {
    await assert.rejects(Engine.spawn({ command: '/no/such/liveryid' }), SidecarExitedError);
  });
});

const BINARY = process.env.LIVERYID_BINARY;

describe('Engine on the compiled sidecar', { skip: BINARY === undefined && 'no compiled binary (build.py test --binary)' }, () => {
  it('spawns the binary and detects like the Python sidecar', async () => {
    const binary = await Engine.spawn({ command: BINARY!, wire: 'msgpack' });
    const python = await Engine.spawn(sidecarOptions('msgpack'));
    try {
      assert.deepEqual(
        binary.info.models.map((m) => [m.name, m.status]),
        python.info.models.map((m) => [m.name, m.status]),
      );
      const image = F1_PHOTO ? { path: F1_PHOTO } : BLANK;
      const [fromBinary, fromPython] = [await binary.detect(image), await python.detect(image)];
      assert.equal(fromBinary.length, fromPython.length);
      fromBinary.forEach((d, i) => d.box.forEach((v, j) => assert.ok(Math.abs(v - fromPython[i]!.box[j]!) < 0.2)));
    } finally {
      await Promise.all([binary.close(), python.close()]);
    }
  });
});
