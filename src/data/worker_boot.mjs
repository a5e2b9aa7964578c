// Entry of the dataloader's worker thread: worker threads do not inherit the TypeScript loader
// of the parent (tsx or vitest), so register tsx's ESM hooks here, then load the real worker
// module (a .ts file) named in workerData.entry.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entry);
