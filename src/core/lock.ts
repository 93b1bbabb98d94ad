// One bastion process per data dir: `<data-dir>/portcullis.pid`, created exclusively. A stale
// file (its process is gone) is taken over; a live one refuses the start with a clear error.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { PortcullisError } from '../policy/types.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function lockDataDir(dataDir: string): () => void {
  const file = join(dataDir, 'portcullis.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o640);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new PortcullisError('data_dir_locked', `${dataDir} is in use by portcullis process ${pid} (${file})`);
      }
      rmSync(file, { force: true });
    }
  }
  throw new PortcullisError('data_dir_locked', `cannot lock ${file}`);
}
