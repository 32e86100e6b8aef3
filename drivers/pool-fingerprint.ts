// The fingerprint of what a pooled sandbox was provisioned from: the ref, the provision command and the
// content of the lockfiles the pool names. A run whose own files give the same fingerprint skips the
// provision command in a pooled sandbox; any difference runs it, as a cold run would.
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

/** A lockfile larger than this is not read: its fingerprint says so, and never matches a read one. */
const MAX_FINGERPRINT_FILE_BYTES = 64 * 1024 * 1024;

export interface FingerprintInput {
  /** The folder the files are read from (the pool's base, or the run's workspace). */
  cwd: string;
  provisionCommand: string | null;
  ref: string | null;
  files: string[];
}

/**
 * sha256 over the ref, the command and each named file's content (or that it is missing, not a regular
 * file, or too large). The last path part is opened without following a link; only equality is ever
 * learnt from the result.
 */
export async function fingerprintOf({ cwd, provisionCommand, ref, files }: FingerprintInput): Promise<string> {
  const hash = createHash('sha256');
  const part = (label: string, value: string | Buffer) => {
    hash.update(`${label}\0${value.length}\0`);
    hash.update(value);
  };
  part('ref', ref ?? '');
  part('provision', provisionCommand ?? '');
  for (const file of [...files].sort()) {
    part('file', file);
    part('content', await fileContent(join(cwd, file)));
  }
  return hash.digest('hex');
}

async function fileContent(path: string): Promise<string | Buffer> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return '\0missing';
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) return '\0not-a-file';
    if (st.size > MAX_FINGERPRINT_FILE_BYTES) return `\0too-large:${st.size}`;
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}
