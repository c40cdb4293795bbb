import { Command } from 'commander';
import { keepValuesAsText } from '../db/client';
import { ConfigError } from '../config';
import { registerData } from './data';
import { registerDb } from './db';
import { registerDemo } from './demo';
import { jsonOutput } from './output';
import { registerPipeline } from './pipeline';
import { registerRecompute } from './recompute';
import { registerSchedule } from './schedule';
import { registerStack } from './stack';
import { registerVerify } from './verify';
import { registerWait } from './wait';
import { registerWorker } from './worker';

export { SCHEDULE_ID, VERIFY_SCHEDULE_ID } from './schedule';

/** The `stategrid` command (docs/cli.md): one module per command group. */
export function buildProgram(): Command {
  const program = new Command('stategrid').description(
    'Real-time layered warehouse for State Grid power data',
  );
  registerStack(program);
  registerDb(program);
  registerPipeline(program);
  registerData(program);
  registerWait(program);
  registerVerify(program);
  registerRecompute(program);
  registerSchedule(program);
  registerDemo(program);
  registerWorker(program);
  program.hook('preAction', (_program, action) => {
    if (action.opts().json) jsonOutput();
  });
  return program;
}

export async function main(argv: string[]): Promise<void> {
  keepValuesAsText();
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof ConfigError) console.error(err.message);
    else console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
