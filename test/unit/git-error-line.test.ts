// Which line of a failing git command's stderr the local driver reports.
import { expect, it } from 'vitest';
import { gitErrorLine } from '../../drivers/local.js';

it.each([
  [
    'the fatal line, not the progress before it',
    "Preparing worktree (new branch 'b')\nfatal: invalid reference: main2\n",
    'fatal: invalid reference: main2',
  ],
  [
    'an error line when there is no fatal one',
    "Preparing worktree (new branch 'b')\nerror: unknown option `x'\nusage: git branch [<options>]\n",
    "error: unknown option `x'",
  ],
  [
    'the fatal line over an earlier error line',
    'error: could not lock config file\nfatal: could not set up branch\n',
    'fatal: could not set up branch',
  ],
  ['the first non-empty line otherwise', '\n  hint: something odd\nmore\n', 'hint: something odd'],
  ['nothing for nothing', '', ''],
])('%s', (_what, stderr, line) => {
  expect(gitErrorLine(stderr)).toBe(line);
});
