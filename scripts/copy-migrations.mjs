// Part of `npm run build`: copies the SQL migrations (store/migrations, read by store/db.ts relative to its
// own file) into dist/store/migrations. A file is replaced only when it changed, and atomically (a process
// migrating a database while a build runs reads the old file or the new one, never half of one).
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function copyTree(from, to) {
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = join(from, entry.name);
    const target = join(to, entry.name);
    if (entry.isDirectory()) {
      copyTree(source, target);
      continue;
    }
    const content = readFileSync(source);
    if (existsSync(target) && readFileSync(target).equals(content)) continue;
    const temp = `${target}.${process.pid}.tmp`;
    writeFileSync(temp, content);
    renameSync(temp, target);
  }
}

copyTree(join(ROOT, 'store', 'migrations'), join(ROOT, 'dist', 'store', 'migrations'));
