// `envrun run egress`: what the egress proxy let a run's sandboxes reach and what it refused
// (`network: "allowlist"`), from the store. Declared in commands.ts.
import type { EgressAuditEntry } from '../admin.js';
import { withAdmin } from './connect.js';
import { runOf, type RunOptions } from './input.js';
import { columns, print, printable, size } from './output.js';

export async function listEgress(o: RunOptions): Promise<void> {
  const [companyId, runId] = runOf(o);
  const entries = await withAdmin((a) => a.listEgress(companyId, runId));
  print(o, entries, () => (entries.length ? table(entries) : '(none)'));
}

function table(entries: EgressAuditEntry[]): string {
  return columns([
    ['HOST', 'PORT', 'PHASE', 'VERDICT', 'REASON', 'CONNECTIONS', 'UP', 'DOWN', 'FIRST', 'LAST'],
    ...entries.map((e) => [
      printable(e.host),
      String(e.port),
      e.phase,
      e.verdict,
      e.reason ?? '-',
      String(e.connections),
      size(e.bytesUp),
      size(e.bytesDown),
      e.firstAt,
      e.lastAt,
    ]),
  ]);
}
