import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { Engine, ErrorCode } from '../src/index.js';
import { FIXTURES, devPhoto, sidecarOptions, slowJpeg } from './helpers.js';

const BLANK = { path: `${FIXTURES}/blank.png` };

describe('library from Node', () => {
  it('enrolls, identifies, tags with progress, lists and exports', async () => {
    const library = mkdtempSync(join(tmpdir(), 'liveryid-library-'));
    const engine = await Engine.spawn(sidecarOptions('msgpack', { library }));
    try {
      assert.equal(engine.info.library?.cars, 0);
      const enrolled = await engine.enroll({ id: 'car-7', label: '#7 Team X', number: '7' }, [BLANK], { boxes: [[4, 4, 60, 44]] });
      assert.equal(enrolled.car.references, 1);
      assert.deepEqual((await engine.cars()).map((c) => c.id), ['car-7']);
      assert.deepEqual(await engine.identify(BLANK), []);
      // adapt checks its model on the references: one per car cannot tell better from worse.
      await assert.rejects(engine.adapt([FIXTURES]), { code: ErrorCode.InvalidParams });
      assert.ok((await engine.revertAdapt()).startsWith(engine.info.models[1]!.name));

      const progress: number[] = [];
      let withRate = 0;
      const tagged = await engine.tag([FIXTURES], {
        recursive: false,
        onProgress: (p) => {
          progress.push(p.done);
          if (p.rate && p.eta_s !== null) withRate++;
        },
      });
      assert.equal(tagged.total, 3); // blank.png, corrupt.jpg, huge.png; the .bin is not a photo
      assert.equal(tagged.tagged, 1);
      assert.deepEqual(tagged.failed.map((f) => f.code).sort(), [ErrorCode.ImageTooLarge, ErrorCode.ImageUnreadable].sort());
      assert.deepEqual(progress, [0, 1, 2, 3]);
      assert.equal(withRate, 3); // every report after the first photo carries photos/s and seconds left
      assert.equal((await engine.results()).total, 0);

      const report = await engine.export('csv', { output: join(library, 'report.csv') });
      assert.ok(readFileSync(report.files[0]!, 'utf8').startsWith('photo,detection_id'));

      assert.equal((await engine.updateCar('car-7', { driver: 'A. Driver' })).driver, 'A. Driver');
      await engine.enroll({ id: 'car-8', label: '#8' }, [BLANK], { boxes: [[0, 0, 30, 30]] });
      const merged = await engine.mergeCars('car-7', ['car-8']);
      assert.equal(merged.references, 2);
      const detail = await engine.car('car-7');
      await engine.removeReference(detail.references[1]!.id);
      assert.equal((await engine.car('car-7')).car.references, 1);
      await assert.rejects(engine.confirm(12345), { code: ErrorCode.NotFound });
      await assert.rejects(engine.reject(12345), { code: ErrorCode.NotFound });
      await engine.removeCar('car-7');
      assert.deepEqual(await engine.cars(), []);

      const entryList = join(library, 'entries.csv');
      writeFileSync(entryList, 'No.;Driver;Team\n7;A. Driver;Team X\n7;B;Y\n');
      const imported = await engine.importEntries({ csv: entryList });
      assert.deepEqual([imported.created, imported.cars[0]?.label, imported.problems[0]?.row], [1, '#7 A. Driver', 1]);
      const again = await engine.importEntries({ rows: [{ number: '7', class: 'GT3' }] });
      assert.deepEqual([again.updated, again.cars[0]?.meta], [1, { class: 'GT3' }]);
      await assert.rejects(engine.importEntries({ csv: join(library, 'missing.csv') }), { code: ErrorCode.InvalidParams });

      const generic = await engine.useEmbedder('mobilenetv2-imagenet');
      assert.deepEqual([generic.model, generic.references], ['mobilenetv2-imagenet', 0]);
      assert.ok((await engine.useEmbedder()).model.startsWith(engine.info.models[1]!.name));
      await assert.rejects(engine.useEmbedder('no-such-model'), { code: ErrorCode.ModelMissing });
    } finally {
      await engine.close();
    }
  });

  it('cancels a running tag through an AbortSignal', async () => {
    const library = mkdtempSync(join(tmpdir(), 'liveryid-library-'));
    const engine = await Engine.spawn(sidecarOptions('json', { library }));
    try {
      const slow = slowJpeg();
      const controller = new AbortController();
      const run = engine.tag([slow, slow, slow], { rescan: true, signal: controller.signal, onProgress: () => controller.abort() });
      await assert.rejects(run, { code: ErrorCode.RequestCancelled });
    } finally {
      await engine.close();
    }
  });

  it('names the car in a real photo of an enrolled livery', { skip: !devPhoto('f1-game-teams-dev/ferrari') && 'no ../shared/data' }, async () => {
    const library = mkdtempSync(join(tmpdir(), 'liveryid-library-'));
    const engine = await Engine.spawn(sidecarOptions('json', { library }));
    try {
      const photo = devPhoto('f1-game-teams-dev/ferrari/20200422160656_1.png')!;
      assert.ok(existsSync(photo));
      await engine.enroll({ id: 'ferrari', label: 'Ferrari', team: 'Ferrari' }, [{ path: photo }]);
      const [vehicle] = await engine.identify({ path: photo });
      assert.equal(vehicle?.candidates[0]?.car_id, 'ferrari');
      assert.equal(vehicle?.decision, 'match'); // the enrolled photo itself: similarity 1
    } finally {
      await engine.close();
    }
  });
});
