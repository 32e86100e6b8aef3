// The egress proxy process (supervisor.ts forks it, as an unprivileged uid when the worker is root). It holds
// the routes the worker sends it, each listening on its lease's unix socket, and reports each connection as
// an event. It writes nothing about a route's secrets anywhere. It ends when the worker does (its IPC
// channel closes), and the worker restarts it when it ends.
import { chmod, rm } from 'node:fs/promises';
import { egressResolution } from './resolve.js';
import { createEgressProxy, type EgressEvent, type Route } from './proxy.js';
import { createInterceptor } from './inject.js';

export type ProxyRoute = Route;
export type ProxyEvent = EgressEvent;

/** Worker → proxy. A `listen` of a route the proxy has is an update of it. */
export type ParentMessage =
  | { type: 'init'; upstreamCaPem?: string }
  | { type: 'listen'; id: number; route: ProxyRoute; socketPath: string }
  | { type: 'unlisten'; id: number; routeId: string };

/** Proxy → worker. */
export type ChildMessage =
  | { type: 'hello' }
  | { type: 'ready' }
  | { type: 'ack'; id: number; error?: string }
  | { type: 'event'; event: ProxyEvent };

function main(): void {
  if (!process.send) {
    process.stderr.write('the egress proxy runs under the worker (drivers/egress/supervisor.ts)\n');
    process.exit(2);
  }
  const send = (message: ChildMessage) => {
    if (process.connected) process.send!(message);
  };
  let proxy: ReturnType<typeof createEgressProxy> | null = null;
  const routes = new Set<string>();

  async function handle(message: ParentMessage): Promise<void> {
    if (message.type === 'init') {
      if (proxy) return;
      const { resolve, isPublic } = egressResolution();
      proxy = createEgressProxy({
        resolve,
        isPublic,
        intercept: createInterceptor(message.upstreamCaPem ? { upstreamCa: [message.upstreamCaPem] } : {}),
        onEvent: (event) => send({ type: 'event', event }),
      });
      send({ type: 'ready' });
      return;
    }
    const id = message.id;
    try {
      if (!proxy) throw new Error('not initialized');
      if (message.type === 'listen') {
        if (routes.has(message.route.id)) {
          proxy.update(message.route);
        } else {
          await rm(message.socketPath, { force: true }); // a socket left by the process before this one
          await proxy.listen(message.route, message.socketPath);
          await chmod(message.socketPath, 0o666); // the sandbox's uid connects; the folder's name is the secret
          routes.add(message.route.id);
        }
      } else if (message.type === 'unlisten') {
        routes.delete(message.routeId);
        await proxy.unlisten(message.routeId);
      }
      send({ type: 'ack', id });
    } catch (err) {
      // A plain reason only: a route's values are never echoed.
      send({ type: 'ack', id, error: (err as NodeJS.ErrnoException).code ?? (err as Error).message });
    }
  }

  process.on('message', (message) => void handle(message as ParentMessage));
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => {
    void (proxy?.close() ?? Promise.resolve()).finally(() => process.exit(0));
  });
  send({ type: 'hello' });
}

main();
