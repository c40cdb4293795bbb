/**
 * What the CLI prints. Results go to stdout; with `--json` stdout carries the JSON document only, so progress and
 * log lines of such a run go to stderr (`note`).
 */

/** A line of the command's result (stdout). */
export const say = (m: string): void => {
  process.stdout.write(m + '\n');
};

/** A progress or log line that is not part of the result (stderr). */
export const note = (m: string): void => {
  process.stderr.write(m + '\n');
};

/** The whole stdout of a `--json` run. */
export const printJson = (value: unknown): void => say(JSON.stringify(value, null, 2));
