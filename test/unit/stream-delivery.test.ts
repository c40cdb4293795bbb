import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { deliverDirectly } from '../../src/cdc/direct-delivery';
import { bind, named } from '../../src/db/sql';

/** The library's side of a stream with no connection: what its copyData handler does with each parsed message. */
function serviceWithSocket() {
  const service = new LogicalReplicationService(
    {},
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
  );
  const socket = { paused: 0, resumed: 0, pause: () => socket.paused++, resume: () => socket.resumed++ };
  const internals = service as unknown as {
    _stop: boolean;
    _connection: unknown;
    _messageQueue: { lsn: string; data: unknown }[];
    _processQueue: () => void;
  };
  internals._stop = false;
  internals._connection = { stream: socket };
  const arrive = (data: unknown) => {
    internals._messageQueue.push({ lsn: '0/0', data });
    internals._processQueue();
  };
  return { service, socket, arrive };
}

const settle = () => new Promise((r) => setImmediate(r));

describe('replication message delivery', () => {
  it('hands messages over as they arrive, in order, pausing the socket only while the handler waits', async () => {
    const { service, socket, arrive } = serviceWithSocket();
    const seen: number[] = [];
    let release: () => void = () => undefined;
    assert.equal(
      deliverDirectly(service, (m) => {
        seen.push(m as number);
        if (m === 2) return new Promise<void>((r) => (release = r));
      }),
      true,
    );
    arrive(1);
    assert.deepEqual(seen, [1], 'delivered synchronously');
    assert.equal(socket.paused, 0);
    arrive(2);
    arrive(3);
    arrive(4);
    assert.deepEqual(seen, [1, 2], 'later messages wait for the handler');
    assert.equal(socket.paused, 1);
    release();
    await settle();
    assert.deepEqual(seen, [1, 2, 3, 4]);
    assert.equal(socket.resumed, 1);
    arrive(5);
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  });

  it('reports a failing handler as the library does (an error event) and goes on', async () => {
    const { service, arrive } = serviceWithSocket();
    const errors: string[] = [];
    const seen: number[] = [];
    service.on('error', (e: Error) => errors.push(e.message));
    deliverDirectly(service, (m) => {
      if (m === 1) throw new Error('sync failure');
      if (m === 2) return Promise.reject(new Error('async failure'));
      seen.push(m as number);
    });
    arrive(1);
    arrive(2);
    arrive(3);
    await settle();
    assert.deepEqual(errors, ['sync failure', 'async failure']);
    assert.deepEqual(seen, [3]);
  });

  it('takes WAL messages off the connection itself, in order behind waiting ones, and leaves keepalives to the library', async () => {
    const service = new LogicalReplicationService(
      {},
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
    );
    // The library's own subscribe on a connection that is an event emitter: no server behind it.
    const socket = { paused: 0, resumed: 0, pause: () => socket.paused++, resume: () => socket.resumed++ };
    const connection = Object.assign(new EventEmitter(), { stream: socket });
    const internals = service as unknown as { client: () => Promise<unknown>; _connection: unknown };
    internals.client = async () => {
      internals._connection = connection;
      return [{}, connection];
    };
    const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: ['p'] });
    plugin.start = () => new Promise(() => undefined);
    const parsed: number[] = [];
    const seen: number[] = [];
    let release: () => void = () => undefined;
    deliverDirectly(
      service,
      (m) => {
        seen.push(m as number);
        if (m === 2) return new Promise<void>((r) => (release = r));
      },
      (payload) => {
        parsed.push(payload[0]);
        return payload[0];
      },
    );
    const heartbeats: string[] = [];
    service.on('heartbeat', (lsn: string) => void heartbeats.push(lsn));
    void service.subscribe(plugin, 'slot', '0/0');
    await settle();
    connection.emit('replicationStart');
    const wal = (n: number) => {
      const chunk = Buffer.alloc(26);
      chunk[0] = 0x77;
      chunk[25] = n;
      connection.emit('copyData', { chunk });
    };
    wal(1);
    assert.deepEqual(seen, [1], 'delivered as it arrives');
    wal(2);
    wal(3);
    const keepalive = Buffer.alloc(18);
    keepalive[0] = 0x6b;
    keepalive.writeUInt32BE(0x1a, 5);
    connection.emit('copyData', { chunk: keepalive });
    wal(4);
    assert.deepEqual(parsed, [1, 2, 3, 4], 'parsed on arrival');
    assert.deepEqual(seen, [1, 2], 'later messages wait for the handler');
    assert.equal(socket.paused, 1);
    assert.deepEqual(heartbeats, ['0/1A']);
    release();
    await settle();
    assert.deepEqual(seen, [1, 2, 3, 4]);
    assert.equal(socket.resumed, 1);
  });

  it('leaves a service without the flow-control queue to its own data event', () => {
    assert.equal(
      deliverDirectly({} as LogicalReplicationService, () => undefined),
      false,
    );
  });
});

describe('prepared statements', () => {
  it('names a statement by its text: the same text one name, another text another', () => {
    const a = named<'x'>('SELECT :x::int');
    assert.equal(a.text, 'SELECT $1::int');
    assert.deepEqual(bind(a, { x: 1 }), [1]);
    assert.equal(named('SELECT :x::int').name, a.name);
    assert.notEqual(named('SELECT :x::bigint').name, a.name);
    assert.match(a.name, /^sg_[0-9a-f]{24}$/);
  });
});
