import type { LogicalReplicationService } from 'pg-logical-replication';

/** The replication connection as the library registers its listeners on it. */
type ReplicationConnection = {
  on(event: string, listener: (...args: never[]) => void): unknown;
  stream?: { pause?: () => void; resume?: () => void };
};

/** The fields of the library's (2.5) flow-control queue this path works with. */
type FlowControlQueue = {
  _messageQueue: { lsn: string; data: unknown }[];
  _processing: boolean;
  _stop: boolean;
  _connection: ReplicationConnection | null;
  _processQueue: () => void;
  client?: () => Promise<[unknown, ReplicationConnection]>;
  emit(event: 'error', err: unknown): boolean;
};

const hasFlowControlQueue = (s: object): s is FlowControlQueue => {
  const q = s as Partial<FlowControlQueue>;
  return (
    typeof q._processQueue === 'function' &&
    Array.isArray(q._messageQueue) &&
    typeof q._processing === 'boolean'
  );
};

/** A CopyData message of the replication protocol carrying WAL (XLogData), and its header's length. */
const XLOG_DATA = 0x77;
const XLOG_DATA_HEADER = 25;

/**
 * Hands each parsed message to `handler` as it arrives, with the library's back-pressure kept: only when the
 * handler returns a promise is the socket paused and later messages queued until it settles.
 *
 * With flow control on, the library queues every message and delivers it through EventEmitter2's emitAsync,
 * awaiting the listeners and then an acknowledge call: several promises per message, each also paying the async
 * hooks that Temporal's activity context turns on. That cost 2.2-2.3 us of CPU per message (per streamed row) in
 * a micro-benchmark of the queue under an AsyncLocalStorage context, against 0.4-0.5 us this way.
 *
 * With `parse` (the plugin's), WAL messages also skip the library's receive step: it formats each message's
 * position as text and queues the message as an object even when nothing waits (8 % of the worker's CPU while
 * streaming); the stream never reads that position. Keepalives and anything else still take the library's path.
 *
 * Returns false, changing nothing, when the library has no such queue (another version): then the caller
 * listens to its `data` event as usual.
 */
export function deliverDirectly(
  service: LogicalReplicationService,
  handler: (message: unknown) => Promise<void> | void,
  parse?: (payload: Buffer) => unknown,
): boolean {
  const queue: object = service;
  if (!hasFlowControlQueue(queue)) return false;
  const resumeAfter = (waiting: Promise<void>) => {
    queue._processing = true;
    queue._connection?.stream?.pause?.();
    const settled = () => {
      queue._processing = false;
      if (queue._stop) return;
      queue._connection?.stream?.resume?.();
      queue._processQueue();
    };
    waiting.then(settled, (err: unknown) => {
      queue.emit('error', err);
      settled();
    });
  };
  const deliver = (data: unknown) => {
    let waiting: Promise<void> | void;
    try {
      waiting = handler(data);
    } catch (err) {
      queue.emit('error', err);
      return;
    }
    if (waiting) resumeAfter(waiting);
  };
  queue._processQueue = () => {
    const messages = queue._messageQueue;
    while (messages.length && !queue._processing && !queue._stop) deliver(messages.shift()?.data);
  };
  if (parse && typeof queue.client === 'function') receiveWalDirectly(queue, parse, deliver);
  return true;
}

/**
 * Puts a listener of WAL messages in front of the library's own on each connection it opens (it registers its
 * copyData listener on the connection `client()` returns): a message is parsed and delivered at once, or queued
 * behind messages still waiting for the handler.
 */
function receiveWalDirectly(
  queue: FlowControlQueue,
  parse: (payload: Buffer) => unknown,
  deliver: (data: unknown) => void,
): void {
  const onWal = (chunk: Buffer) => {
    if (queue._stop) return;
    const data = parse(chunk.subarray(XLOG_DATA_HEADER));
    if (queue._processing || queue._messageQueue.length) queue._messageQueue.push({ lsn: '', data });
    else deliver(data);
  };
  const connect = queue.client!.bind(queue);
  queue.client = async () => {
    const pair = await connect();
    const connection = pair[1];
    const register = connection.on.bind(connection);
    connection.on = (event: string, listener: (...args: never[]) => void) => {
      if (event !== 'copyData') return register(event, listener);
      const library = listener as (message: { chunk: Buffer }) => void;
      return register(event, (message: { chunk: Buffer }) =>
        message.chunk[0] === XLOG_DATA ? onWal(message.chunk) : library(message),
      );
    };
    return pair;
  };
}
