// Which processes a command started, read from /proc: a snapshot of a process and all its descendants, and
// which of them still run later. A process is known by its pid and start time, so a reused pid is not it.
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** Start time in clock ticks after boot (/proc/PID/stat field 22). */
  start: number;
  state: string;
  command: string;
}

function stat(pid: number): ProcessInfo | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces or parentheses: the fields follow the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    return { pid, ppid: Number(fields[1]), start: Number(fields[19]), state: fields[0]!, command };
  } catch {
    return null; // gone meanwhile
  }
}

function allProcesses(): ProcessInfo[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map((name) => stat(Number(name)))
    .filter((p): p is ProcessInfo => p !== null);
}

/** The processes with these pids and everything below them, as they are now. */
export function processTree(...roots: number[]): ProcessInfo[] {
  const all = allProcesses();
  const children = new Map<number, ProcessInfo[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const found = new Map<number, ProcessInfo>();
  const queue = all.filter((p) => roots.includes(p.pid));
  for (let p = queue.shift(); p; p = queue.shift()) {
    if (found.has(p.pid)) continue;
    found.set(p.pid, p);
    queue.push(...(children.get(p.pid) ?? []));
  }
  return [...found.values()];
}

/** Those of `processes` that still run (the same process, not a zombie). */
export function stillRunning(processes: ProcessInfo[]): ProcessInfo[] {
  return processes.filter((p) => {
    const now = stat(p.pid);
    return now !== null && now.start === p.start && now.state !== 'Z';
  });
}

/** SIGKILL to those still running: a failed test leaves nothing behind. */
export function killAll(processes: ProcessInfo[]): void {
  for (const p of stillRunning(processes)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

export const describeProcesses = (processes: ProcessInfo[]) => processes.map((p) => `${p.pid} ${p.command}`);
