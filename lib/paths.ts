// Path relations, as text (no filesystem access).
import { isAbsolute, relative, resolve } from 'node:path';

/** `child` is `parent` or inside it. */
export function within(child: string, parent: string): boolean {
  const rel = relative(resolve(parent), resolve(child));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
