// Temporary directories for tests: under os.tmpdir(), traversable by other users (a PostgreSQL
// started as root runs as the postgres user and must reach its data dir), removed at the end.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface TempDir {
  path: string;
  /** Removes the directory and everything in it; safe to call twice. */
  remove(): Promise<void>;
}

const pending = new Set<string>();
let exitHookInstalled = false;

/** Creates `<tmpdir>/<prefix>XXXXXX` with mode 0755; removed by remove() or, at the latest, at exit. */
export async function tempDir(prefix = 'portcullis-'): Promise<TempDir> {
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.promises.chmod(dir, 0o755);
  pending.add(dir);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const d of pending) fs.rmSync(d, { recursive: true, force: true });
    });
  }
  return {
    path: dir,
    async remove(): Promise<void> {
      pending.delete(dir);
      await fs.promises.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}
