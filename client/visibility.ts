// Runs as Temporal visibility lists them, by envrun's search attributes: answered by the server, with no
// worker and no database involved. EnvRunClient.listRuns and stats call these.
import type { Client } from '@temporalio/client';
import { z } from 'zod';
import { ExternalId, SEARCH_ATTRIBUTES, WORKFLOW_TYPE } from '../contracts/index.js';
import { parseInput } from './errors.js';

/** Values that go into a visibility query: no quotes, nothing a query could be bent with. */
const SearchValue = ExternalId.or(z.uuid());

/** A run as Temporal visibility lists it (no database involved). */
export interface ListedRun {
  workflowId: string;
  companyId: string | null;
  heartbeatRunId: string | null;
  phase: string | null;
  errorCode: string | null;
  environmentId: string | null;
  status: string;
  startTime: string;
}

export interface ReadinessStats {
  driver: string;
  provider: string;
  runs: number;
  p50Ms: number;
  p95Ms: number;
}

export interface RunFilter {
  companyId?: string;
  phase?: string;
  errorCode?: string;
  environmentId?: string;
}

/** Runs from Temporal visibility, filtered by envrun's search attributes. */
export async function listRuns(temporal: Client, filter: RunFilter, limit: number): Promise<ListedRun[]> {
  const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`];
  const add = (key: { name: string }, value: string | undefined, field: string) => {
    if (value === undefined) return;
    parseInput(SearchValue, value, field);
    clauses.push(`${key.name} = '${value}'`);
  };
  add(SEARCH_ATTRIBUTES.companyId, filter.companyId, 'companyId');
  add(SEARCH_ATTRIBUTES.phase, filter.phase, 'phase');
  add(SEARCH_ATTRIBUTES.errorCode, filter.errorCode, 'errorCode');
  add(SEARCH_ATTRIBUTES.environmentId, filter.environmentId, 'environmentId');
  const runs: ListedRun[] = [];
  for await (const wf of temporal.workflow.list({ query: clauses.join(' AND ') })) {
    const sa = wf.typedSearchAttributes;
    runs.push({
      workflowId: wf.workflowId,
      companyId: sa.get(SEARCH_ATTRIBUTES.companyId) ?? null,
      heartbeatRunId: sa.get(SEARCH_ATTRIBUTES.heartbeatRunId) ?? null,
      phase: sa.get(SEARCH_ATTRIBUTES.phase) ?? null,
      errorCode: sa.get(SEARCH_ATTRIBUTES.errorCode) ?? null,
      environmentId: sa.get(SEARCH_ATTRIBUTES.environmentId) ?? null,
      status: wf.status.name,
      startTime: wf.startTime.toISOString(),
    });
    if (runs.length >= limit) break;
  }
  return runs;
}

/** Requested→ready p50/p95 per driver/provider over runs started in the last `sinceMs`. */
export async function readinessStats(
  temporal: Client,
  sinceMs: number,
  filter: { companyId?: string },
): Promise<ReadinessStats[]> {
  const since = new Date(Date.now() - sinceMs).toISOString();
  const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`, `StartTime > '${since}'`];
  if (filter.companyId !== undefined) {
    parseInput(SearchValue, filter.companyId, 'companyId');
    clauses.push(`${SEARCH_ATTRIBUTES.companyId.name} = '${filter.companyId}'`);
  }
  const groups = new Map<string, number[]>();
  clauses.push(`${SEARCH_ATTRIBUTES.readyMs.name} IS NOT NULL`);
  for await (const wf of temporal.workflow.list({ query: clauses.join(' AND ') })) {
    const sa = wf.typedSearchAttributes;
    const readyMs = sa.get(SEARCH_ATTRIBUTES.readyMs);
    if (typeof readyMs !== 'number') continue;
    const key = `${sa.get(SEARCH_ATTRIBUTES.driver) ?? 'none'}/${sa.get(SEARCH_ATTRIBUTES.provider) ?? 'none'}`;
    groups.set(key, [...(groups.get(key) ?? []), readyMs]);
  }
  const rank = (sorted: number[], p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
  return [...groups.entries()].sort().map(([key, values]) => {
    const sorted = [...values].sort((a, b) => a - b);
    const [driver, provider] = key.split('/') as [string, string];
    return { driver, provider, runs: sorted.length, p50Ms: rank(sorted, 50), p95Ms: rank(sorted, 95) };
  });
}
