// One LISTEN connection a process shares for the command channels: readers of a command's output wait on
// it instead of polling, a worker hears kill and stdin requests for the commands it runs. If the
// connection breaks, it is opened again (backing off) and every subscriber is woken, so each one reads the
// store again from where it was: a notification missed meanwhile loses nothing.
import pg from 'pg';
// The channel names (commands.ts holds them too; kept here so the two modules do not import each other).
const OUTPUT_CHANNEL = 'envrun_command_output';
const CONTROL_CHANNEL = 'envrun_command_control';

type Wake = () => void;

export class CommandListener {
  private client: pg.Client | null = null;
  private connecting: Promise<void> | null = null;
  private closed = false;
  private readonly subscribers = new Map<string, Set<Wake>>();
  private readonly channels = new Set<string>();
  private readonly listening = new Map<string, Promise<void>>();

  /** `config`: the store's pool options (its connection string or fields). */
  constructor(
    private readonly config: pg.ClientConfig,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {}

  /** Calls `wake` on every notification about command `key` (on `channel`), and after a reconnect. */
  async subscribe(channel: 'output' | 'control', key: string, wake: Wake): Promise<() => void> {
    const id = `${channel}:${key}`;
    let set = this.subscribers.get(id);
    if (!set) this.subscribers.set(id, (set = new Set()));
    set.add(wake);
    await this.connect();
    await this.listen(channel);
    return () => {
      set.delete(wake);
      if (set.size === 0) this.subscribers.delete(id);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    const c = this.client;
    this.client = null;
    await c?.end().catch(() => undefined);
  }

  private connect(): Promise<void> {
    if (this.client || this.closed) return Promise.resolve();
    this.connecting ??= (async () => {
      for (let delay = 100; ; delay = Math.min(delay * 2, 5000)) {
        const client = new pg.Client(this.config);
        try {
          await client.connect();
          client.on('notification', (n) => this.dispatch(n.channel, n.payload ?? ''));
          client.on('error', (err) => {
            this.onError(err);
            void client.end().catch(() => undefined);
          });
          client.on('end', () => {
            if (this.client !== client) return;
            this.client = null;
            if (!this.closed && this.subscribers.size) void this.connect().then(() => this.wakeAll());
          });
          // A channel is listened to once something subscribes to it: a worker that only runs commands
          // hears control requests, not every chunk of output.
          if (this.channels.size) await client.query([...this.channels].map((c) => `listen ${c}`).join('; '));
          // The connection never keeps the process alive: it lives as long as something else does.
          (client as unknown as { connection: { stream: { unref?(): void } } }).connection.stream.unref?.();
          this.client = client;
          return;
        } catch (err) {
          this.onError(err as Error);
          await client.end().catch(() => undefined);
          if (this.closed) return;
          await new Promise((r) => setTimeout(r, delay).unref());
        }
      }
    })().finally(() => (this.connecting = null));
    return this.connecting;
  }

  /** LISTENs on the kind's channel once; every caller waits until it is listening. */
  private listen(kind: 'output' | 'control'): Promise<void> {
    const channel = kind === 'output' ? OUTPUT_CHANNEL : CONTROL_CHANNEL;
    let listening = this.listening.get(channel);
    if (!listening) {
      this.channels.add(channel);
      // A failed LISTEN is not kept: the connection ends and its reconnect listens on every channel again.
      listening = Promise.resolve(this.client?.query(`listen ${channel}`)).then(
        () => undefined,
        () => undefined,
      );
      this.listening.set(channel, listening);
    }
    return listening;
  }

  private dispatch(channel: string, payload: string): void {
    const kind = channel === OUTPUT_CHANNEL ? 'output' : channel === CONTROL_CHANNEL ? 'control' : null;
    if (!kind) return;
    const colon = payload.indexOf(':');
    const key = colon === -1 ? payload : payload.slice(0, colon);
    for (const wake of this.subscribers.get(`${kind}:${key}`) ?? []) wake();
  }

  private wakeAll(): void {
    for (const set of this.subscribers.values()) for (const wake of set) wake();
  }
}

/** The pool's connection settings, for a listener beside it. */
export function listenerConfigOf(pool: pg.Pool): pg.ClientConfig {
  return (pool as unknown as { options: pg.ClientConfig }).options;
}
