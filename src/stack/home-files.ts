import fs from 'node:fs';
import path from 'node:path';
import type { AppConfig } from '../config';
import { isAlive, readPid } from './proc';

/** Pid and log files of what `stack up` starts, under STATEGRID_HOME/run and /logs. */
export type Log = (m: string) => void;

export const runFile = (cfg: AppConfig, name: string) => path.join(cfg.home, 'run', `${name}.pid`);
export const logFile = (cfg: AppConfig, name: string) => path.join(cfg.home, 'logs', `${name}.log`);

/** A pid from our pid file that is alive and still runs the program we started (pids get recycled). */
export function ownedPid(cfg: AppConfig, name: string, marker: string): number | undefined {
  const pid = readPid(runFile(cfg, name));
  if (!isAlive(pid)) return undefined;
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(marker) ? pid : undefined;
  } catch {
    return pid;
  }
}
