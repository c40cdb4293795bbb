import pg from 'pg';

/** Ids the load inserts while streaming; snapshot seeds stay below. */
export const STREAM_BASE = 10_000_000;
/** Users 1..USERS exist from the seed; the load adds users from LATE_USER_BASE, after consumptions name them. */
export const USERS = 50;
const LATE_USER_BASE = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The share of the rate one connection offers: up to it the load is one client, as it always was. */
const ROWS_PER_CLIENT = 1500;
/** A client that fell behind its pace makes up at most this much, not a burst after an outage. */
const MAX_CATCH_UP_MS = 1000;

/** A change the load adds to a transaction besides its inserts; `id` reserves a fresh consumption id. */
type Extra = (db: pg.Client, first: number, id: () => number) => Promise<unknown>;

/** Each user column in turn, one of them made invalid (a blank name) and valid again the next time round. */
const USER_UPDATES = [
  `user_name = 'renamed_' || user_id`,
  `usage_type = CASE usage_type WHEN '居民用电' THEN '商业用电' ELSE '居民用电' END`,
  `region_id = 1 + (region_id % 4), region_name = 'region_' || (1 + (region_id % 4))`,
  `update_time = now()`,
  `user_name = chr(12288) || ' '`, // ideographic and ASCII space: blank
  `user_name = 'user_' || user_id || '_电'`,
];

/**
 * Continuous source writes in small transactions: each inserts a run of consumptions, and in turn one more change
 * of another kind, so the stream carries every kind the pipeline handles: updates of each consumption column, a
 * primary key change, a delete, invalid rows (a negative amount, a NaN cost, a missing user; half fixed later), a
 * consumption whose user arrives later, that user's arrival, a user leaving, and updates of each user column. A
 * scenario may ask for one TRUNCATE of power_consumption.
 */
export class WriteLoad {
  nextId = STREAM_BASE;
  committed = 0;
  errors = 0;
  /** How many changes of each kind committed (a kind whose target row was gone still counts its statement). */
  readonly kinds = new Map<string, number>();
  private running = false;
  private done: Promise<void> = Promise.resolve();
  private truncateAsked?: () => void;
  private lateUsers = 0;
  /** Transactions begun by all clients: picks each one's extra change in turn. */
  private tx = 0;

  constructor(private url: string) {}

  /**
   * Offers `rowsPerSecond` from as many connections as one can keep up with (a client running these small
   * transactions in turn reached ~3,000 rows/s on a loaded 2-core machine): each paces its own share, ids come
   * from the shared counter, so every client's inserts are disjoint runs.
   */
  start(rowsPerSecond = 1500): void {
    this.running = true;
    const clients = Math.max(1, Math.ceil(rowsPerSecond / ROWS_PER_CLIENT));
    this.done = Promise.all(
      Array.from({ length: clients }, () => this.loop(rowsPerSecond / clients, rowsPerSecond)),
    ).then(() => undefined);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }

  /** Resolves once a transaction of the load has truncated power_consumption. */
  truncate(): Promise<void> {
    return new Promise((resolve) => (this.truncateAsked = resolve));
  }

  /** Kinds of change not committed since the counts were cleared. */
  missingKinds(): string[] {
    return this.changeKinds(0)
      .map(([kind]) => kind)
      .filter((kind) => !this.kinds.get(kind));
  }

  /** The change a transaction adds besides its inserts, by its number. */
  private extra(tx: number): [string, Extra] {
    const kinds = this.changeKinds(tx);
    return kinds[tx % kinds.length];
  }

  private changeKinds(tx: number): [string, Extra][] {
    const late = LATE_USER_BASE + this.lateUsers;
    return [
      [
        'update amount',
        (db, f) =>
          db.query(
            `UPDATE power_consumption SET consumption_amount = consumption_amount + 0.01 WHERE consumption_id = $1`,
            [f - 7],
          ),
      ],
      [
        'update cost',
        (db, f) =>
          db.query(
            `UPDATE power_consumption SET consumption_cost = consumption_cost + 0.02 WHERE consumption_id = $1`,
            [f - 9],
          ),
      ],
      [
        'update date',
        (db, f) =>
          db.query(
            `UPDATE power_consumption SET consumption_date = consumption_date + interval '7 hours' WHERE consumption_id = $1`,
            [f - 11],
          ),
      ],
      [
        'update user_id',
        (db, f) =>
          db.query(
            `UPDATE power_consumption SET user_id = 1 + (user_id + 3) % ${USERS} WHERE consumption_id = $1`,
            [f - 13],
          ),
      ],
      [
        'key change',
        (db, f, id) =>
          db.query(`UPDATE power_consumption SET consumption_id = $2 WHERE consumption_id = $1`, [
            f - 17,
            id(),
          ]),
      ],
      ['delete', (db, f) => db.query(`DELETE FROM power_consumption WHERE consumption_id = $1`, [f - 19])],
      [
        'invalid insert',
        (db, _f, id) =>
          db.query(
            `INSERT INTO power_consumption SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE 1 + i % ${USERS} END,
           CASE WHEN i % 3 = 1 THEN -1.5 ELSE 2.5 END, CASE WHEN i % 3 = 2 THEN 'NaN'::numeric ELSE 0.7 END,
           '2026-11-19 12:00' FROM (SELECT $1::bigint AS i) v`,
            [id()],
          ),
      ],
      [
        'fix invalid',
        (db) =>
          db.query(
            `UPDATE power_consumption SET user_id = coalesce(user_id, 1), consumption_amount = abs(consumption_amount),
           consumption_cost = 0.9
         WHERE consumption_id = (SELECT min(consumption_id) FROM power_consumption WHERE consumption_id >= ${STREAM_BASE}
           AND consumption_id % 2 = 0 AND (user_id IS NULL OR consumption_amount < 0 OR consumption_cost = 'NaN'))`,
          ),
      ],
      [
        'late consumption',
        (db, _f, id) =>
          db.query(`INSERT INTO power_consumption VALUES ($1, $2, 3.3, 1.1, '2026-11-19 18:00')`, [
            id(),
            late + 1,
          ]),
      ],
      [
        'late user arrives',
        // Counted when it runs, not when the kind was picked: with several clients each arrival is another user.
        (db) =>
          db.query(
            `INSERT INTO power_user SELECT u, 'late_' || u, '工业用电', 1 + u % 4, 'region_' || (1 + u % 4), now()
          FROM (SELECT $1::bigint AS u) v`,
            [LATE_USER_BASE + ++this.lateUsers],
          ),
      ],
      ['user leaves', (db) => db.query(`DELETE FROM power_user WHERE user_id = $1`, [late - 2])],
      // One user takes the column updates in turn, so its blank name is fixed by the next one.
      [
        'update user',
        (db) => {
          const turn = Math.floor(tx / 12);
          return db.query(`UPDATE power_user SET ${USER_UPDATES[turn % USER_UPDATES.length]}
          WHERE user_id = ${1 + (Math.floor(turn / USER_UPDATES.length) % USERS)}`);
        },
      ],
    ];
  }

  /** One client's share of the load: `rowsPerSecond` of the `totalRate` asked. */
  private async loop(rowsPerSecond: number, totalRate: number): Promise<void> {
    let db: pg.Client | undefined;
    // Above ~2,500 rows/s larger transactions keep the rate without more round trips.
    const perTx = totalRate > 2500 ? 50 : 20;
    const interval = (perTx * 1000) / rowsPerSecond;
    let due = Date.now();
    while (this.running) {
      try {
        if (!db) {
          db = new pg.Client({ connectionString: this.url });
          db.on('error', () => undefined);
          await db.connect();
        }
        await this.transaction(db, perTx);
      } catch {
        this.errors += 1;
        await db?.end().catch(() => undefined);
        db = undefined;
        await sleep(300);
      }
      due = Math.max(due + interval, Date.now() - MAX_CATCH_UP_MS);
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
    }
    await db?.end().catch(() => undefined);
  }

  /** A run of `perTx` inserts and one change of another kind, in one transaction (a TRUNCATE first if asked). */
  private async transaction(db: pg.Client, perTx: number): Promise<void> {
    // Taken before the first await, so only one client truncates; given back if the TRUNCATE fails.
    const truncated = this.truncateAsked;
    this.truncateAsked = undefined;
    if (truncated) {
      await db.query(`TRUNCATE power_consumption`).catch((err) => {
        this.truncateAsked ??= truncated;
        throw err;
      });
      this.kinds.set('truncate', (this.kinds.get('truncate') ?? 0) + 1);
      truncated();
    }
    const first = this.nextId;
    this.nextId += perTx;
    const [kind, change] = this.extra(++this.tx);
    await db.query('BEGIN');
    await db.query(
      `INSERT INTO power_consumption SELECT g, 1 + g % ${USERS}, (g % 997) / 10.0, (g % 613) / 10.0,
         '2026-11-18'::timestamp + make_interval(secs => (g * 37) % 259200)
       FROM generate_series($1::bigint, $2::bigint) g`,
      [first, first + perTx - 1],
    );
    const extra = first > STREAM_BASE + 40;
    if (extra) await change(db, first, () => this.nextId++);
    await db.query('COMMIT');
    this.committed += 1;
    this.kinds.set('insert', (this.kinds.get('insert') ?? 0) + perTx);
    if (extra) this.kinds.set(kind, (this.kinds.get(kind) ?? 0) + 1);
  }
}
