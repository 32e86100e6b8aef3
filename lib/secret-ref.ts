// Secret references (`env:NAME`, `file:/path`, contracts/common.ts SecretRef), resolved on the worker at run
// time: the secret itself is never in config, lease metadata, the activity log or workflow history. An error
// names the field and the reference, never the value.
import { readFile } from 'node:fs/promises';
import { NonRetryableError } from '../contracts/errors.js';

/** The secret `ref` points at; `field` names it in errors (`privateKeySecretRef`, `config.egress.inject[0].secret`). */
export async function resolveSecretRef(ref: string, field = 'privateKeySecretRef'): Promise<string> {
  if (ref.startsWith('env:')) {
    const value = process.env[ref.slice(4)];
    if (!value) throw new NonRetryableError(`${field} ${ref}: the variable is not set on this worker`);
    return value;
  }
  if (ref.startsWith('file:')) {
    return readFile(ref.slice(5), 'utf8').catch((err: Error) => {
      throw new NonRetryableError(`${field} ${ref}: ${err.message}`);
    });
  }
  throw new NonRetryableError(`${field} must be env:NAME or file:/path`);
}
