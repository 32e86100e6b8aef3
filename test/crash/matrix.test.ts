// The whole crash matrix (test/crash/matrix.ts): `npm run test:crash`, which CI runs after the suite.
import { MATRIX, crashSuite } from './matrix.js';

crashSuite(MATRIX);
