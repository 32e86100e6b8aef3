// Child process for the embedded-store test: ensures the store of a data folder and prints its URL.
import { ensureEmbeddedStore } from '../../store/embedded.js';

const url = await ensureEmbeddedStore(process.argv[2]!);
console.log(url);
