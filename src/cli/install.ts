// `portcullis install [--prefix DIR] [--dry-run] [--binary PATH]`: puts the bastion on a host
// (or into an image root with --prefix): the `portcullis` system user and group, the operator
// group `portcullis-oncall`, /etc/portcullis/ (config + example policies, 0640 root:portcullis),
// /var/lib/portcullis/ (0750 portcullis), the binary in /usr/local/bin, the systemd unit in
// /etc/systemd/system, enabled.
//
// Idempotent: a second run changes nothing. A config file that differs from the shipped one was
// edited here and is never overwritten: the shipped version is written beside it as `.new`.
// --dry-run prints every step and changes nothing.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, closeSync, copyFileSync, existsSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { assetKeys, isSea, packageRoot, readAsset } from '../runtime/assets.js';
import { EXIT, UsageError } from './util.js';

export const SERVICE_USER = 'portcullis';
export const OPERATOR_GROUP = 'portcullis-oncall';
const UNIT = 'portcullis.service';

export interface InstallOptions {
  prefix?: string;
  dryRun?: boolean;
  binary?: string;
  /** Where step lines go (default stdout). */
  out?: (line: string) => void;
}

interface Ids {
  uid: number;
  gid: number;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const mode = (m: number) => m.toString(8).padStart(4, '0');

/** Look a name up in <prefix>/etc/passwd or group (or through NSS with getent when prefix is /). */
function lookup(prefix: string, db: 'passwd' | 'group', name: string): number | null {
  if (prefix === '/') {
    const r = spawnSync('getent', [db, name], { encoding: 'utf8' });
    if (r.status !== 0) return null;
    const id = Number(r.stdout.split(':')[2]);
    return Number.isInteger(id) ? id : null;
  }
  const file = join(prefix, 'etc', db);
  if (!existsSync(file)) return null;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name) {
      const id = Number(f[2]);
      return Number.isInteger(id) ? id : null;
    }
  }
  return null;
}

function systemdRunning(): boolean {
  return existsSync('/run/systemd/system');
}

function pid1(): string {
  try {
    return readFileSync('/proc/1/comm', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** The binary to install: --binary, the running single binary, or dist/portcullis of a checkout. */
function sourceBinary(flag: string | undefined): string {
  if (flag) {
    const p = resolve(flag);
    if (!existsSync(p) || !statSync(p).isFile()) throw new UsageError(`--binary ${flag}: no such file`);
    return p;
  }
  if (isSea()) return process.execPath;
  const built = join(packageRoot(), 'dist', 'portcullis');
  if (existsSync(built)) return built;
  throw new UsageError('no single binary to install: run this from dist/portcullis (build it with ./build.sh) or pass --binary PATH');
}

export async function install(o: InstallOptions): Promise<number> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const prefix = resolve(o.prefix ?? '/');
  const dry = o.dryRun === true;
  const atRoot = prefix === '/';
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (atRoot && !isRoot && !dry) throw new UsageError('installing into / needs root (it creates a system user and changes file ownership); try --dry-run, or --prefix DIR');
  if (!atRoot && !dry && !existsSync(prefix)) throw new UsageError(`--prefix ${o.prefix}: no such directory`);
  const binary = sourceBinary(o.binary);
  const at = (p: string) => (atRoot ? p : join(prefix, p));
  const show = (p: string) => p; // paths are printed as they are on the target
  let changes = 0;
  const step = (verb: string, what: string, fn?: () => void) => {
    if (fn) {
      changes++;
      if (!dry) fn();
    }
    out(`  ${(fn && dry ? `would ${verb}` : verb).padEnd(14)} ${what}`);
  };

  out(`portcullis install${dry ? ' (dry run: nothing is changed)' : ''}: prefix ${prefix}; binary ${binary}`);

  // 1. users and groups
  const userTools = ['groupadd', 'useradd'].every(which);
  const toolPrefix = atRoot ? [] : ['--prefix', prefix];
  const canUsers = isRoot && userTools;
  const ensureGroup = (name: string, why: string) => {
    if (lookup(prefix, 'group', name) !== null) return step('exists', `group ${name}`);
    if (!canUsers && !dry) return step('skip', `group ${name} (${why}): ${!isRoot ? 'not root' : 'groupadd is not installed'}; create it yourself`);
    step('create', `group ${name} (${why})`, () => {
      if (!atRoot) mkdirSync(join(prefix, 'etc'), { recursive: true });
      execFileSync('groupadd', [...toolPrefix, '--system', name], { stdio: ['ignore', 'ignore', 'pipe'] });
    });
  };
  ensureGroup(SERVICE_USER, 'the service');
  ensureGroup(OPERATOR_GROUP, 'operators: may use the control socket');
  if (lookup(prefix, 'passwd', SERVICE_USER) !== null) step('exists', `user ${SERVICE_USER}`);
  else if (!canUsers && !dry) step('skip', `user ${SERVICE_USER}: ${!isRoot ? 'not root' : 'useradd is not installed'}; create it yourself`);
  else {
    step('create', `user ${SERVICE_USER} (system, no login, home /var/lib/portcullis)`, () =>
      execFileSync('useradd', [...toolPrefix, '--system', '--gid', SERVICE_USER, '--home-dir', '/var/lib/portcullis', '--no-create-home', '--shell', '/usr/sbin/nologin', '--comment', 'Portcullis bastion', SERVICE_USER], { stdio: ['ignore', 'ignore', 'pipe'] }),
    );
  }
  const ids = (): { root: Ids; service: Ids } | null => {
    const uid = lookup(prefix, 'passwd', SERVICE_USER);
    const gid = lookup(prefix, 'group', SERVICE_USER);
    return uid === null || gid === null || !isRoot ? null : { root: { uid: 0, gid }, service: { uid, gid } };
  };

  // 2. directories, files
  const ensured = new Set<string>();
  const ensureDir = (p: string, m: number, owner: 'root' | 'service') => {
    if (ensured.has(p)) return;
    ensured.add(p);
    const full = at(p);
    const label = `${show(p)}/ (${mode(m)} ${owner === 'root' ? 'root' : SERVICE_USER}:${SERVICE_USER})`;
    if (existsSync(full)) {
      const st = statSync(full);
      const want = ids();
      const o = want ? (owner === 'root' ? want.root : want.service) : null;
      if ((st.mode & 0o7777) === m && (!o || (st.uid === o.uid && st.gid === o.gid))) return step('exists', label);
      return step('fix', label, () => {
        chmodSync(full, m);
        if (o) chownSync(full, o.uid, o.gid);
      });
    }
    step('create', label, () => {
      mkdirSync(dirname(full), { recursive: true, mode: 0o755 });
      mkdirSync(full, { recursive: true, mode: m });
      chmodSync(full, m);
      const i = ids();
      if (i) chownSync(full, (owner === 'root' ? i.root : i.service).uid, i.root.gid);
    });
  };
  /** Write a shipped file; an existing different one is kept and the shipped one goes to `.new`. */
  const shipFile = (p: string, data: Buffer, m: number, group: 'service' | 'root') => {
    const full = at(p);
    const setOwner = () => {
      chmodSync(full, m);
      const i = ids();
      if (i && group === 'service') chownSync(full, 0, i.root.gid);
    };
    if (!existsSync(full)) return step('write', `${show(p)} (${mode(m)})`, () => writeAtomic(full, data, m, setOwner));
    if (sha256(readFileSync(full)) === sha256(data)) return step('same', show(p));
    const fresh = full + '.new';
    if (existsSync(fresh) && sha256(readFileSync(fresh)) === sha256(data)) return step('keep', `${show(p)}: edited here, left alone (the shipped version is already in ${show(p)}.new)`);
    step('keep', `${show(p)}: edited here, left alone; the shipped version goes to ${show(p)}.new`, () => writeAtomic(fresh, data, m, () => chmodSync(fresh, m)));
  };

  ensureDir('/etc/portcullis', 0o750, 'root');
  ensureDir('/etc/portcullis/policies', 0o750, 'root');
  shipFile('/etc/portcullis/portcullis.yaml', readAsset('examples/portcullis.yaml'), 0o640, 'service');
  for (const key of assetKeys('examples/policies')) {
    const rel = relative('examples/policies', key);
    const dir = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
    if (dir) ensureDir(`/etc/portcullis/policies/${dir}`, 0o750, 'root');
    shipFile(`/etc/portcullis/policies/${rel}`, readAsset(key), 0o640, 'service');
  }
  ensureDir('/var/lib/portcullis', 0o750, 'service');

  // 3. the binary
  /** A system directory (root:root 0755) that only has to exist. */
  const systemDir = (p: string) => {
    if (!existsSync(at(p))) step('create', `${p}/`, () => mkdirSync(at(p), { recursive: true, mode: 0o755 }));
  };
  const binDest = at('/usr/local/bin/portcullis');
  systemDir('/usr/local/bin');
  const same = existsSync(binDest) && (realpathSync(binDest) === realpathSync(binary) || sha256(readFileSync(binDest)) === sha256(readFileSync(binary)));
  if (same) step('same', '/usr/local/bin/portcullis');
  else {
    const size = statSync(binary).size;
    step(existsSync(binDest) ? 'replace' : 'copy', `/usr/local/bin/portcullis (0755 root:root, ${(size / 1048576).toFixed(1)} MiB)`, () => {
      const tmp = `${binDest}.${process.pid}.tmp`;
      copyFileSync(binary, tmp);
      chmodSync(tmp, 0o755);
      if (isRoot) chownSync(tmp, 0, 0);
      renameSync(tmp, binDest);
    });
  }

  // 4. the unit, enabled
  systemDir('/etc/systemd/system');
  shipFile(`/etc/systemd/system/${UNIT}`, readAsset(`systemd/${UNIT}`), 0o644, 'root');
  const wants = at(`/etc/systemd/system/multi-user.target.wants/${UNIT}`);
  if (!which('systemctl')) step('skip', `systemctl enable ${UNIT}: systemctl is not installed`);
  else if (atRoot && !systemdRunning()) step('skip', `systemctl enable ${UNIT}: systemd is not running here (PID 1 is ${pid1()}); on the host run: systemctl enable --now ${UNIT}`);
  else if (isSymlink(wants)) step('enabled', UNIT);
  else {
    const args = atRoot ? ['enable', UNIT] : [`--root=${prefix}`, 'enable', UNIT];
    step('enable', `${UNIT} (systemctl ${args.join(' ')})`, () => {
      if (atRoot) execFileSync('systemctl', ['daemon-reload'], { stdio: ['ignore', 'ignore', 'pipe'] });
      const r = spawnSync('systemctl', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`systemctl ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim()}`);
    });
  }

  out(
    changes === 0
      ? 'nothing to do: already installed'
      : dry
        ? `${changes} change(s) would be made`
        : `done (${changes} change(s)). Next: edit /etc/portcullis/portcullis.yaml (targets, TLS certificate), check it with \`portcullis config check\`, then \`systemctl start ${UNIT.replace('.service', '')}\`; operators join the ${OPERATOR_GROUP} group`,
  );
  return EXIT.OK;
}

function isSymlink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

function writeAtomic(file: string, data: Buffer, m: number, after: () => void): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode: m });
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  after();
}
