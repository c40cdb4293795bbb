import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import pino from 'pino';

/**
 * Structured JSON logs (pino) for the worker; the Temporal SDK's logs, including activity `log` calls with their
 * pipeline id, LSN and batch fields, go through the same logger. Connection URLs are masked before they are logged.
 */
export function createLogger(level: string) {
  return pino({ level, base: { service: 'stategrid-worker' }, timestamp: pino.stdTimeFunctions.isoTime });
}

const LEVELS: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

export function installSdkLogger(logger: pino.Logger): void {
  const sdkLevel = (Object.keys(LEVELS) as LogLevel[]).find((l) => LEVELS[l] === logger.level) ?? 'INFO';
  Runtime.install({
    logger: new DefaultLogger(sdkLevel, (entry) => {
      logger[LEVELS[entry.level]](entry.meta ?? {}, entry.message);
    }),
  });
}
