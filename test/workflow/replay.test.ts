import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { WORKFLOW_BUNDLE } from '../../src/build/bundle-workflows';

/**
 * Recorded pipeline histories replay against today's workflow bundle (what the worker runs): a non-deterministic
 * change fails here.
 */
const FIXTURES = path.resolve(__dirname, '../../../test/fixtures');

describe('recorded workflow histories', () => {
  it('replay deterministically', async () => {
    const { History } = temporal.api.history.v1;
    const files = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.history.pb'));
    assert.ok(files.length >= 3, 'the recorded histories are committed');
    for (const f of files) {
      const history = History.decode(fs.readFileSync(path.join(FIXTURES, f)));
      assert.ok(history.events.length > 10, `${f} holds a real history`);
      await Worker.runReplayHistory({ workflowBundle: { codePath: WORKFLOW_BUNDLE } }, history, f);
    }
  });
});
