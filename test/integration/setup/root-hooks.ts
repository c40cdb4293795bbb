import './env';
import { loadConfig } from '../../../src/config';
import { initDatabases } from '../../../src/db/init';
import { stackDown, stackUp } from '../../../src/stack';
import { workerLogSizes } from '../../../src/stack/workers';
import { PIPELINE_ID } from '../helpers/pipeline';
import { pipelineReport, workerReport } from './failed-test-report';

/** Brings up the real test stack (PostgreSQL, Temporal dev server, worker process) once for the whole run. */
const log = (m: string) => console.log(`  [stack] ${m}`);

/** Sizes of the worker logs when the current test started. */
let logsAtStart = new Map<string, number>();

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(15 * 60 * 1000);
    const cfg = loadConfig();
    await stackUp(cfg, log, { restartWorker: true });
    await initDatabases(cfg, 'stategrid_cdc');
  },
  beforeEach() {
    logsAtStart = workerLogSizes(loadConfig());
  },
  /**
   * After a failed test: shows what the stack's workers logged during it and where the test pipeline stands, then
   * starts the workers anew, so that a worker the failure left stopped or stuck does not fail every test after it.
   */
  async afterEach(this: Mocha.Context) {
    if (this.currentTest?.state !== 'failed') return;
    this.timeout(120 * 1000);
    const cfg = loadConfig();
    try {
      const report = [...workerReport(cfg, logsAtStart), ...(await pipelineReport(cfg, PIPELINE_ID))];
      for (const line of report) log(line);
    } catch (err) {
      log(`no report: ${(err as Error).message}`);
    }
    // A hook that fails skips every test after it: a stack that cannot come back fails those tests on its own.
    await stackUp(cfg, log, { restartWorker: true }).catch((err: Error) =>
      log(`the workers did not start again: ${err.message}`),
    );
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(120 * 1000);
    if (process.env.STATEGRID_TEST_KEEP_STACK) return;
    await stackDown(loadConfig(), log);
  },
};
