// The CLI's input: parsers whose messages name the option. Every command checks its input with these before
// it connects, so bad input starts nothing and writes nothing.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { ExternalId, describeZodError } from '../../contracts/index.js';
import { InvalidInputError } from '../errors.js';
import type { Output } from './output.js';

export function fail(field: string, message: string): never {
  throw new InvalidInputError(`${field}: ${message}`);
}

export function check<S extends z.ZodType>(schema: S, value: unknown, field: string): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new InvalidInputError(describeZodError(r.error, field));
  return r.data;
}

export function parseJsonObject(text: string | undefined, field: string): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    fail(field, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(field, 'must be a JSON object');
  return value as Record<string, unknown>;
}

/** Milliseconds as typed: digits only ('' or ' ' is not 0, nor is 0x10 sixteen). */
export const millis = (min: number) =>
  z.string().regex(/^\d+$/, 'must be a whole number of milliseconds').transform(Number).pipe(z.number().int().min(min));

/** A path on this machine, resolved against the current directory; an empty one is a mistake, not ".". */
export function localPath(value: string, field: string): string {
  if (value === '') fail(field, 'must not be empty');
  return resolve(value);
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The variables of an `--env-file`: `NAME=VALUE` lines, the value being the rest of the line as written (no
 * quotes or escapes are read; a CR before the line end is dropped); blank lines and `#` comments are
 * skipped, and a later line wins. A bad line is named by its number only: its text may hold a value.
 */
export function readEnvFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    fail('--env-file', `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const env: Record<string, string> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const eq = line.indexOf('=');
    if (eq <= 0) fail('--env-file', `line ${i + 1}: must be NAME=VALUE`);
    if (!ENV_NAME.test(line.slice(0, eq)))
      fail('--env-file', `line ${i + 1}: the name must be letters, digits and _, not starting with a digit`);
    env[line.slice(0, eq)] = line.slice(eq + 1);
  });
  return env;
}

export function parseEnvAssignments(values: string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of values ?? []) {
    const eq = item.indexOf('=');
    if (eq <= 0) fail('--env-var', `"${item}" must be NAME=VALUE`);
    env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return env;
}

/** The options of a command on one of a company's records by id (`<group> <name> ID --company C`). */
export interface IdOptions extends Output {
  company: string;
}

/** Checks such a command's id and company, in that order, before anything connects. */
export function checkId(id: string, o: IdOptions): { companyId: string } {
  check(z.uuid(), id, 'id');
  return { companyId: check(ExternalId, o.company, '--company') };
}

/** The options naming one run: --company and --run. */
export interface RunOptions extends Output {
  company: string;
  run: string;
}

/** --company and --run, checked. */
export function runOf(o: RunOptions): [companyId: string, runId: string] {
  return [check(ExternalId, o.company, '--company'), check(ExternalId, o.run, '--run')];
}
