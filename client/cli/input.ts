// The CLI's input: options every command shares, and parsers whose messages name the option. Every command
// checks its input with these before it connects, so bad input starts nothing and writes nothing.
import { Option, type Command } from 'commander';
import { resolve } from 'node:path';
import { z } from 'zod';
import { ExternalId, describeZodError } from '../../contracts/index.js';
import { InvalidInputError } from '../errors.js';
import type { Output } from './output.js';

export const company = () => new Option('--company <id>', 'company id').makeOptionMandatory();
export const runOpt = () => new Option('--run <id>', 'heartbeat run id').makeOptionMandatory();
export const json = () => new Option('--json', 'print JSON');

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

export function parseEnvAssignments(values: string[] | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of values ?? []) {
    const eq = item.indexOf('=');
    if (eq <= 0) fail('--env-var', `"${item}" must be NAME=VALUE`);
    env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return env;
}

/**
 * A command on one of a company's records by id (`<group> <name> ID --company C`): both are checked before
 * anything connects, then `act` runs and returns what the command prints.
 */
export function idCommand(
  group: Command,
  name: string,
  description: string,
  act: (companyId: string, id: string, options: Output) => Promise<void>,
): void {
  group
    .command(name)
    .description(description)
    .argument('<id>')
    .addOption(company())
    .addOption(json())
    .action(async (id: string, o: Output & { company: string }) => {
      check(z.uuid(), id, 'id');
      await act(check(ExternalId, o.company, '--company'), id, o);
    });
}
