/** Pure, deterministic time helpers for window close: safe inside workflow code. */

const DAY_MS = 86_400_000;

/** Parses a naive 'YYYY-MM-DD HH:MM:SS[.fff]' (or a date) as if it were UTC, for event-time arithmetic. */
export function naiveToMs(ts: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?)?/.exec(ts);
  if (!m) throw new Error(`not a timestamp: ${ts}`);
  const ms = m[7] ? Number((m[7] + '000').slice(0, 3)) : 0;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] ?? 0), +(m[5] ?? 0), +(m[6] ?? 0), ms);
}

export function dayToString(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Offset of a time zone at an instant, in ms (positive east of UTC). */
function zoneOffsetMs(instant: number, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  }).formatToParts(new Date(instant));
  const get = (t: string) => Number(parts.find((p) => p.type === t)?.value);
  return (
    Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second')) - instant
  );
}

/** The instant a naive local wall-clock time happens in `timeZone`. */
export function zonedToInstant(naiveMs: number, timeZone: string): number {
  let guess = naiveMs - zoneOffsetMs(naiveMs, timeZone);
  guess = naiveMs - zoneOffsetMs(guess, timeZone); // second pass settles DST edges
  return guess;
}

/** Processing-time close of a day: its end (next local midnight) plus grace, as a UTC instant. */
export function dayCloseInstant(day: string, timeZone: string, graceMinutes: number): number {
  return zonedToInstant(naiveToMs(day) + DAY_MS, timeZone) + graceMinutes * 60_000;
}

/** Event-time close: the watermark (max event time minus lateness) has passed the day's end. */
export function watermarkPassed(day: string, maxEventTime: string | null, latenessMinutes: number): boolean {
  if (!maxEventTime) return false;
  return naiveToMs(maxEventTime) - latenessMinutes * 60_000 >= naiveToMs(day) + DAY_MS;
}

/** The local calendar day before the given instant, e.g. the day a 01:00 schedule recomputes. */
export function previousLocalDay(instant: number, timeZone: string): string {
  const local = instant + zoneOffsetMs(instant, timeZone);
  return dayToString(local - DAY_MS);
}
