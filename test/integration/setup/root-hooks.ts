import './env';
import { loadConfig } from '../../../src/config';
import { initDatabases } from '../../../src/db/init';
import { stackDown, stackUp } from '../../../src/stack';

/** Brings up the real test stack (PostgreSQL, Temporal dev server, worker process) once for the whole run. */
const log = (m: string) => console.log(`  [stack] ${m}`);

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(15 * 60 * 1000);
    const cfg = loadConfig();
    await stackUp(cfg, log, { restartWorker: true });
    await initDatabases(cfg, 'stategrid_cdc');
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(120 * 1000);
    if (process.env.STATEGRID_TEST_KEEP_STACK) return;
    await stackDown(loadConfig(), log);
  },
};
