// The relay inside a `network: "allowlist"` sandbox: the sandbox has loopback only, and HTTP(S)_PROXY names
// 127.0.0.1:EGRESS_PROXY_PORT, where this listens and pipes each connection, byte for byte, to the lease's
// unix socket of the worker's egress proxy (bound read-only at RELAY_SOCKET). It decides nothing: the proxy
// does. It runs under the worker's own node binary (bound at SANDBOX_NODE), with node's built-ins only.
import { EGRESS_PROXY_PORT } from '../../contracts/egress.js';

/** Where the sandbox sees its route's folder (holding the socket `s`), the relay and the node binary. */
export const SANDBOX_EGRESS_DIR = '/run/envrun/egress';
export const RELAY_SOCKET = `${SANDBOX_EGRESS_DIR}/s`;
export const SANDBOX_NODE = '/run/envrun/node';
export const SANDBOX_RELAY = '/run/envrun/relay.js';
/** What the relay writes on descriptor 3 once it listens (then it closes it); its stdout and stderr are /dev/null. */
export const RELAY_READY = 'ready';
/** How long the relay may take to listen before it gives up (and the command does not start). */
export const RELAY_START_TIMEOUT_MS = 10_000;

/**
 * The relay's source (CommonJS). It ignores the signals a command's process group gets (`run kill`): it
 * lives as long as the sandbox, whose end (its pid namespace's) ends it.
 */
export const RELAY_SOURCE = `'use strict';
const net = require('net');
const fs = require('fs');
for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']) process.on(s, () => {});
const say = (line) => {
  try { fs.writeSync(3, line + '\\n'); fs.closeSync(3); } catch {}
};
const giveUp = setTimeout(() => { say('error timeout'); process.exit(1); }, ${RELAY_START_TIMEOUT_MS});
// Downloads: the socket's reads land in reused buffers (a fresh one per read costs page faults and garbage
// collections); a read that filled its buffer gets a large one next. A buffer is reused once its write ended.
const SMALL = 16384, LARGE = 262144;
const pools = { [SMALL]: [], [LARGE]: [] };
const take = (size) => pools[size].pop() || Buffer.allocUnsafeSlow(size);
const giveBack = (b) => { if (pools[b.length].length < 16) pools[b.length].push(b); };
const server = net.createServer({ allowHalfOpen: true }, (client) => {
  let next = SMALL;
  let waiting = false;
  const upstream = net.connect({
    path: ${JSON.stringify(RELAY_SOCKET)},
    allowHalfOpen: true,
    onread: {
      buffer: () => take(next),
      callback: (n, b) => {
        next = n === b.length ? LARGE : SMALL;
        if (client.write(b.subarray(0, n), () => giveBack(b))) return true;
        waiting = true;
        return false;
      },
    },
  });
  client.on('drain', () => { if (waiting) { waiting = false; upstream.resume(); } });
  upstream.on('end', () => client.end());
  const end = () => { client.destroy(); upstream.destroy(); };
  client.on('error', end);
  upstream.on('error', end);
  client.pipe(upstream);
});
server.on('error', (err) => { say('error ' + (err.code || err.message)); process.exit(1); });
server.listen(${EGRESS_PROXY_PORT}, '127.0.0.1', () => { clearTimeout(giveUp); say(${JSON.stringify(RELAY_READY)}); });
`;

/**
 * The shell script that starts the relay, waits until it listens, then runs the command in its place
 * (`exec`: its pid, exit status and signals are the command's own). The relay is started in a subshell that
 * leaves at once, so it is the sandbox init's child, never the command's. `$1` is the command, the rest
 * its arguments. Exit 125 when the relay did not start. The relay runs with none of the command's
 * environment, and with few threads (4): they count in the command's `limits.processes`.
 */
export const RELAY_WRAPPER = [
  `ready=$( (/usr/bin/env -i UV_THREADPOOL_SIZE=1 ${SANDBOX_NODE} --v8-pool-size=1 ${SANDBOX_RELAY} 3>&1 </dev/null >/dev/null 2>&1 &) )`,
  `if [ "$ready" != ${RELAY_READY} ]; then echo "envrun: the egress relay did not start (\${ready:-no answer})" >&2; exit 125; fi`,
  'exec "$@"',
].join('\n');
