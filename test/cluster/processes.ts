// The cluster harness's child processes (Temporal's services, the worker hosts): started, watched, stopped.
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import pg from 'pg';

export interface Proc {
  child: ChildProcess;
  exited: Promise<void>;
}

export function track(child: ChildProcess): Proc {
  const exited = new Promise<void>((r) => {
    if (child.exitCode !== null || child.signalCode !== null) r();
    else child.once('exit', () => r());
  });
  return { child, exited };
}

export function alive(p: Proc | undefined): p is Proc {
  return !!p && p.child.exitCode === null && p.child.signalCode === null;
}

export async function terminate(p: Proc | undefined, graceMs: number): Promise<void> {
  if (!alive(p)) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await p.exited;
  clearTimeout(timer);
}

export async function kill9(p: Proc | undefined): Promise<void> {
  if (!alive(p)) return;
  p.child.kill('SIGKILL');
  await p.exited;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      res(true);
    });
    socket.once('error', () => res(false));
  });
}

export async function withPg<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
