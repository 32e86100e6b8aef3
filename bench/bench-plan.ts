// The shape of a run, read from its Temporal history, for `npm run bench`: what the bare_shape baseline
// replays with no-op bodies. Nothing here knows envrun's steps: a completed run's history is split into its
// workflow tasks, each task's commands are classified (regular activity and its queue, local activity,
// search-attribute upsert, memo upsert, patch marker, timer, update accepted/completed), and the commands the
// bare workflow can issue itself become its plan, with the payload sizes envrun's own commands carried.
import proto, { type temporal } from '@temporalio/proto';

/** One command bare_shape issues. Sizes are payload data bytes as envrun's history recorded them. */
export interface ShapeStep {
  k: 'local' | 'regular' | 'upsert' | 'memo' | 'patch' | 'sleep';
  /** regular: which queue the activity went to (the workflow's own, or another one: a worker host's). */
  q?: 'shared' | 'host';
  /** Activity: input and result payload bytes; its summary (user metadata), if any. */
  in?: number;
  out?: number;
  s?: string;
  /** upsert: [name, SearchAttributeType, value] per key (values as recorded). */
  sa?: Array<[string, string, unknown]>;
  /** memo: the fields upserted, as recorded. */
  memo?: Record<string, unknown>;
  /** sleep: a timer that fired. */
  ms?: number;
}

/** What bare_shape executes: the steps before ready, the hold, the steps from complete to close. */
export interface ShapePlan {
  ready: ShapeStep[];
  /** The run held its ready state with a timer (cancelled by completion); its duration in ms. */
  holdTimerMs: number | null;
  /** The hold timer is cancelled when the run completes (else it is left pending and dropped at close). */
  holdTimerCancelled: boolean;
  complete: ShapeStep[];
  /** Payload bytes of the waitReady and complete update results and of the workflow's result. */
  readyBytes: number;
  completeBytes: number;
  resultBytes: number;
}

/** One workflow task's commands (and update messages), as tags: the shape compared between envrun and bare. */
export type TaskSignature = string[];

export interface PartCounts {
  workflowTasks: number;
  regular: number;
  regularHost: number;
  local: number;
  upserts: number;
  upsertKeys: number;
  memos: number;
  patches: number;
  timers: number;
}

export interface DerivedShape {
  plan: ShapePlan;
  /** Per part, each workflow task's tags. */
  tasks: { ready: TaskSignature[]; held: TaskSignature[]; complete: TaskSignature[] };
  counts: { ready: PartCounts; complete: PartCounts; total: PartCounts };
  events: number;
  bytes: number;
  inputBytes: number;
  /** Things the derivation saw and could not reproduce (failed tasks, unknown commands). */
  notes: string[];
}

type Event = temporal.api.history.v1.IHistoryEvent;
type Payloads = temporal.api.common.v1.IPayloads | null | undefined;
type Payload = temporal.api.common.v1.IPayload;

const payloadBytes = (p: Payload | null | undefined) => p?.data?.length ?? 0;
const payloadsBytes = (ps: Payloads) => (ps?.payloads ?? []).reduce((n, p) => n + payloadBytes(p), 0);
const text = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b).toString('utf8') : '');
function decode(p: Payload | null | undefined): unknown {
  if (!p?.data || p.data.length === 0) return null;
  const encoding = text(p.metadata?.encoding);
  if (encoding !== 'json/plain') return null;
  return JSON.parse(text(p.data)) as unknown;
}
const durationMs = (d: { seconds?: unknown; nanos?: number | null } | null | undefined) =>
  Number(d?.seconds ?? 0) * 1000 + Math.round(Number(d?.nanos ?? 0) / 1e6);

/** Search attribute type names as payload metadata has them → SearchAttributeType. */
const SA_TYPES: Record<string, string> = {
  Keyword: 'KEYWORD',
  Text: 'TEXT',
  Int: 'INT',
  Double: 'DOUBLE',
  Bool: 'BOOL',
  Datetime: 'DATETIME',
  KeywordList: 'KEYWORD_LIST',
};

interface Task {
  tags: string[];
  steps: ShapeStep[];
  /** Timers started in this task, by id. */
  timers: string[];
}

/**
 * Reads a completed run's history (the one update named `readyUpdate` answers "ready", `completeUpdate`
 * starts the end) into the plan bare_shape replays and the per-task shape to compare.
 */
export function deriveShape(
  history: temporal.api.history.v1.IHistory,
  readyUpdate = 'waitReady',
  completeUpdate = 'complete',
): DerivedShape {
  const events: Event[] = history.events ?? [];
  const notes: string[] = [];
  const started = events[0]?.workflowExecutionStartedEventAttributes;
  const ownQueue = started?.taskQueue?.name ?? '';
  const fired = new Set(
    events.flatMap((e) => (e.timerFiredEventAttributes ? [e.timerFiredEventAttributes.timerId!] : [])),
  );
  const activityResult = new Map<string, number>();
  for (const e of events) {
    const done = e.activityTaskCompletedEventAttributes;
    if (done) activityResult.set(String(done.scheduledEventId), payloadsBytes(done.result));
  }
  const updateName = new Map<string, string>();
  const tasks: Task[] = [];
  let readyTask = -1;
  let completeTask = -1;
  let readyBytes = 0;
  let completeBytes = 0;
  let resultBytes = 0;
  let holdTimerMs: number | null = null;
  let holdTimerCancelled = false;
  let holdTimerId: string | null = null;
  const current = () => tasks[tasks.length - 1];
  const command = (tag: string, step?: ShapeStep) => {
    const task = current();
    if (!task) {
      notes.push(`${tag} before the first workflow task completed`);
      return;
    }
    task.tags.push(tag);
    if (step) task.steps.push(step);
  };
  for (const e of events) {
    if (e.workflowTaskCompletedEventAttributes) tasks.push({ tags: [], steps: [], timers: [] });
    else if (e.workflowTaskFailedEventAttributes) notes.push(`workflow task failed (event ${String(e.eventId)})`);
    else if (e.workflowTaskTimedOutEventAttributes) notes.push(`workflow task timed out (event ${String(e.eventId)})`);
    const a = e.activityTaskScheduledEventAttributes;
    if (a) {
      const q = a.taskQueue?.name === ownQueue ? 'shared' : 'host';
      const s = decode(e.userMetadata?.summary);
      command(`regular:${q}`, {
        k: 'regular',
        q,
        in: payloadsBytes(a.input),
        out: activityResult.get(String(e.eventId)) ?? 0,
        ...(typeof s === 'string' ? { s } : {}),
      });
    }
    const m = e.markerRecordedEventAttributes;
    if (m) {
      const details = m.details ?? {};
      if (m.markerName === 'core_local_activity') {
        const s = decode(e.userMetadata?.summary);
        command('local', {
          k: 'local',
          out: payloadsBytes(details.data),
          ...(typeof s === 'string' ? { s } : {}),
        });
      } else if (m.markerName === 'core_patch') command('patch', { k: 'patch' });
      else command(`marker:${m.markerName}`);
    }
    const u = e.upsertWorkflowSearchAttributesEventAttributes;
    if (u) {
      const fields = u.searchAttributes?.indexedFields ?? {};
      const names = Object.keys(fields).sort();
      if (names.length > 0 && names.every((n) => n === 'TemporalChangeVersion')) {
        command('upsert:patch'); // issued by patched() itself
      } else {
        const sa = names
          .filter((n) => n !== 'TemporalChangeVersion')
          .map((n): [string, string, unknown] => [
            n,
            SA_TYPES[text(fields[n]!.metadata?.type)] ?? 'KEYWORD',
            decode(fields[n]),
          ]);
        command(`upsert:${names.length}`, { k: 'upsert', sa });
      }
    }
    const w = e.workflowPropertiesModifiedEventAttributes;
    if (w) {
      const fields = w.upsertedMemo?.fields ?? {};
      command(`memo:${Object.keys(fields).length}`, {
        k: 'memo',
        memo: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, decode(v)])),
      });
    }
    const t = e.timerStartedEventAttributes;
    if (t) {
      const id = t.timerId!;
      const ms = durationMs(t.startToFireTimeout);
      if (fired.has(id)) command('sleep', { k: 'sleep', ms });
      else {
        command('timer');
        current()?.timers.push(id);
        holdTimerId = id;
        holdTimerMs = ms;
      }
    }
    if (e.timerCanceledEventAttributes) {
      command('timer-cancel');
      if (e.timerCanceledEventAttributes.timerId === holdTimerId) holdTimerCancelled = true;
    }
    const accepted = e.workflowExecutionUpdateAcceptedEventAttributes;
    if (accepted) {
      const name = accepted.acceptedRequest?.input?.name ?? '?';
      updateName.set(accepted.protocolInstanceId ?? '', name);
      command(`accept:${name}`);
      if (name === completeUpdate && completeTask < 0) completeTask = tasks.length - 1;
    }
    const completed = e.workflowExecutionUpdateCompletedEventAttributes;
    if (completed) {
      const name = updateName.get(completed.meta?.updateId ?? '') ?? '?';
      command(`complete:${name}`);
      const bytes = payloadsBytes(completed.outcome?.success);
      if (name === readyUpdate && readyTask < 0) {
        readyTask = tasks.length - 1;
        readyBytes = bytes;
      }
      if (name === completeUpdate) completeBytes = bytes;
    }
    const closed = e.workflowExecutionCompletedEventAttributes;
    if (closed) {
      resultBytes = payloadsBytes(closed.result);
      command('close');
    }
    for (const other of [
      'activityTaskCancelRequestedEventAttributes',
      'startChildWorkflowExecutionInitiatedEventAttributes',
      'signalExternalWorkflowExecutionInitiatedEventAttributes',
      'requestCancelExternalWorkflowExecutionInitiatedEventAttributes',
      'workflowExecutionContinuedAsNewEventAttributes',
      'workflowExecutionFailedEventAttributes',
    ] as const) {
      if (e[other]) {
        command(other.replace('EventAttributes', ''));
        notes.push(`${other.replace('EventAttributes', '')}: not reproduced by bare_shape`);
      }
    }
  }
  if (readyTask < 0) notes.push(`no completed ${readyUpdate} update`);
  if (completeTask < 0) notes.push(`no accepted ${completeUpdate} update`);
  const readyTasks = tasks.slice(0, readyTask + 1);
  const heldTasks = tasks.slice(readyTask + 1, completeTask < 0 ? tasks.length : completeTask);
  const completeTasks = completeTask < 0 ? [] : tasks.slice(completeTask);
  if (heldTasks.some((t) => t.steps.length)) notes.push('commands while held at ready: not reproduced');
  // A timer started in the task that answered ready and cancelled later is how the run held; other
  // unfired timers cannot be replayed.
  const lastReady = readyTasks[readyTasks.length - 1];
  if (holdTimerId && !lastReady?.timers.includes(holdTimerId)) {
    notes.push('a timer that never fired was started outside the ready task: not reproduced');
    holdTimerMs = null;
  }
  const counts = (part: Task[]): PartCounts => {
    const steps = part.flatMap((t) => t.steps);
    const tags = part.flatMap((t) => t.tags);
    return {
      workflowTasks: part.length,
      regular: steps.filter((s) => s.k === 'regular').length,
      regularHost: steps.filter((s) => s.k === 'regular' && s.q === 'host').length,
      local: steps.filter((s) => s.k === 'local').length,
      upserts: tags.filter((t) => t.startsWith('upsert:')).length,
      upsertKeys: steps.reduce((n, s) => n + (s.sa?.length ?? 0), 0),
      memos: steps.filter((s) => s.k === 'memo').length,
      patches: steps.filter((s) => s.k === 'patch').length,
      timers: tags.filter((t) => t === 'timer' || t === 'sleep').length,
    };
  };
  return {
    plan: {
      ready: readyTasks.flatMap((t) => t.steps),
      holdTimerMs,
      holdTimerCancelled,
      complete: completeTasks.flatMap((t) => t.steps),
      readyBytes,
      completeBytes,
      resultBytes,
    },
    tasks: {
      ready: readyTasks.map((t) => t.tags),
      held: heldTasks.map((t) => t.tags),
      complete: completeTasks.map((t) => t.tags),
    },
    counts: { ready: counts(readyTasks), complete: counts(completeTasks), total: counts(tasks) },
    events: events.length,
    bytes: historyBytes(history),
    inputBytes: payloadsBytes(started?.input),
    notes,
  };
}

/** The serialized size of every event, summed (what the server stores, before its own framing). */
export function historyBytes(history: temporal.api.history.v1.IHistory): number {
  const { HistoryEvent } = proto.temporal.api.history.v1;
  return (history.events ?? []).reduce((n, e) => n + HistoryEvent.encode(e).finish().length, 0);
}

/** Where two shapes differ, in words (empty when they match task for task). */
export function compareShapes(a: DerivedShape, b: DerivedShape, names: [string, string]): string[] {
  const out: string[] = [];
  for (const part of ['ready', 'held', 'complete'] as const) {
    const [x, y] = [a.tasks[part], b.tasks[part]];
    if (x.length !== y.length)
      out.push(`${part}: ${x.length} workflow tasks in ${names[0]}, ${y.length} in ${names[1]}`);
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      // Update messages and commands may be ordered differently within one task: compare them as multisets.
      const [sx, sy] = [[...x[i]!].sort().join(' '), [...y[i]!].sort().join(' ')];
      if (sx !== sy)
        out.push(`${part} task ${i + 1}: ${names[0]} [${x[i]!.join(', ')}] vs ${names[1]} [${y[i]!.join(', ')}]`);
    }
  }
  if (a.events !== b.events) out.push(`events per run: ${names[0]} ${a.events}, ${names[1]} ${b.events}`);
  return out;
}
