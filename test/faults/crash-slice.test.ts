// A slice of the crash matrix (test/crash/matrix.ts) in `npm test`: one case per gap between two steps, the
// provider and the killed worker rotating. `npm run test:crash` runs every case.
import { SLICE, crashSuite } from '../crash/matrix.js';

crashSuite(SLICE);
