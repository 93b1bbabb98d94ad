// Issue 10: `portcullis install --prefix ROOT` into a temp root (users with shadow's
// useradd/groupadd --prefix, systemctl --root to enable): dry run changes nothing, the first run
// lays everything out with the right modes and owners, the second changes nothing, an edited
// config is kept (the shipped one goes to .new). And the unit file: `systemd-analyze verify`, and
// `systemd-analyze security --offline=yes` for its exposure score.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = process.cwd();
const MAIN = join(root, 'dist', 'src', 'cli', 'main.js');
// The file installed as the binary: the single binary when it is built, else this Node (any real
// executable: install copies and compares bytes, it never runs it).
const BINARY = existsSync(join(root, 'dist', 'portcullis')) ? join(root, 'dist', 'portcullis') : process.execPath;

function install(prefix: string, ...extra: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, 'install', '--prefix', prefix, '--binary', BINARY, ...extra], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function idOf(prefix: string, db: 'passwd' | 'group', name: string): number | undefined {
  const line = readFileSync(join(prefix, 'etc', db), 'utf8').split('\n').find((l) => l.split(':')[0] === name);
  return line ? Number(line.split(':')[2]) : undefined;
}

function tree(dir: string, base = dir, out: string[] = [], depth = 0): string[] {
  if (depth > 12) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    out.push(p.slice(base.length));
    if (e.isDirectory()) tree(p, base, out, depth + 1);
  }
  return out.sort();
}

const isRoot = process.getuid?.() === 0;

describe('portcullis install --prefix', () => {
  test('dry run, install, idempotent second run, edited config kept beside a .new', { skip: isRoot ? false : 'needs root (user creation and chown into the temp root)' }, () => {
    const prefix = mkdtempSync(join(tmpdir(), 'pc-install-'));
    try {
      const dry = install(prefix, '--dry-run');
      assert.equal(dry.status, 0, dry.stderr);
      assert.match(dry.stdout, /would create +group portcullis\b/);
      assert.match(dry.stdout, /would create +user portcullis\b/);
      assert.match(dry.stdout, /would write +\/etc\/portcullis\/portcullis\.yaml/);
      assert.match(dry.stdout, /would copy +\/usr\/local\/bin\/portcullis/);
      assert.match(dry.stdout, /would enable +portcullis\.service/);
      assert.deepEqual(readdirSync(prefix), [], 'a dry run changes nothing');

      const first = install(prefix);
      assert.equal(first.status, 0, first.stdout + first.stderr);
      const uid = idOf(prefix, 'passwd', 'portcullis');
      const gid = idOf(prefix, 'group', 'portcullis');
      assert.ok(uid !== undefined && gid !== undefined, first.stdout);
      assert.ok(idOf(prefix, 'group', 'portcullis-oncall') !== undefined, 'operator group');
      const passwd = readFileSync(join(prefix, 'etc', 'passwd'), 'utf8');
      assert.match(passwd, /^portcullis:[^:]*:\d+:\d+:[^:]*:\/var\/lib\/portcullis:\/usr\/sbin\/nologin$/m);
      const st = (p: string) => statSync(join(prefix, p));
      const modeOf = (p: string) => st(p).mode & 0o7777;
      assert.equal(modeOf('etc/portcullis'), 0o750);
      assert.equal(st('etc/portcullis').gid, gid);
      assert.equal(modeOf('etc/portcullis/portcullis.yaml'), 0o640);
      assert.deepEqual([st('etc/portcullis/portcullis.yaml').uid, st('etc/portcullis/portcullis.yaml').gid], [0, gid]);
      assert.equal(readFileSync(join(prefix, 'etc/portcullis/portcullis.yaml'), 'utf8'), readFileSync(join(root, 'examples/portcullis.yaml'), 'utf8'));
      for (const f of ['postgres.yaml', 'ssh.yaml', 'kubernetes.yaml', 'tests/postgres.yaml']) {
        assert.equal(modeOf(`etc/portcullis/policies/${f}`), 0o640, f);
        assert.equal(readFileSync(join(prefix, 'etc/portcullis/policies', f), 'utf8'), readFileSync(join(root, 'examples/policies', f), 'utf8'));
      }
      assert.equal(modeOf('var/lib/portcullis'), 0o750);
      assert.deepEqual([st('var/lib/portcullis').uid, st('var/lib/portcullis').gid], [uid, gid]);
      assert.equal(modeOf('var/lib'), 0o755, 'parents stay traversable');
      assert.equal(modeOf('usr/local/bin/portcullis'), 0o755);
      assert.equal(st('usr/local/bin/portcullis').size, statSync(BINARY).size);
      assert.equal(readFileSync(join(prefix, 'etc/systemd/system/portcullis.service'), 'utf8'), readFileSync(join(root, 'systemd/portcullis.service'), 'utf8'));
      const wants = join(prefix, 'etc/systemd/system/multi-user.target.wants/portcullis.service');
      assert.ok(lstatSync(wants).isSymbolicLink(), 'enabled (systemctl --root)');
      assert.equal(readlinkSync(wants), '/etc/systemd/system/portcullis.service');

      const before = tree(prefix);
      const second = install(prefix);
      assert.equal(second.status, 0, second.stderr);
      assert.match(second.stdout, /nothing to do: already installed/);
      assert.doesNotMatch(second.stdout, /^ {2}(create|write|copy|replace|enable|fix|keep) /m);
      assert.deepEqual(tree(prefix), before, 'idempotent: the second run changes nothing');

      const cfg = join(prefix, 'etc/portcullis/portcullis.yaml');
      appendFileSync(cfg, '# edited by the operator\n');
      const edited = readFileSync(cfg, 'utf8');
      const third = install(prefix);
      assert.equal(third.status, 0, third.stderr);
      assert.match(third.stdout, /keep +\/etc\/portcullis\/portcullis\.yaml: edited here, left alone; the shipped version goes to \/etc\/portcullis\/portcullis\.yaml\.new/);
      assert.equal(readFileSync(cfg, 'utf8'), edited, 'the edit survives');
      assert.equal(readFileSync(cfg + '.new', 'utf8'), readFileSync(join(root, 'examples/portcullis.yaml'), 'utf8'));
      assert.equal(statSync(cfg + '.new').mode & 0o777, 0o640);
      const fourth = install(prefix);
      assert.match(fourth.stdout, /nothing to do: already installed/);
      assert.match(fourth.stdout, /already in \/etc\/portcullis\/portcullis\.yaml\.new/);

      const bad = install(join(prefix, 'missing'));
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /no such directory/);
    } finally {
      rmSync(prefix, { recursive: true, force: true });
    }
  });

  test('installing into / as a non-root user is refused with a usage error', { skip: isRoot ? 'runs as root here' : false }, () => {
    const r = spawnSync(process.execPath, [MAIN, 'install', '--binary', BINARY], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /needs root/);
  });
});

describe('systemd/portcullis.service', () => {
  const analyze = '/usr/bin/systemd-analyze';
  const available = existsSync(analyze);

  test('systemd-analyze verify passes; security exposure is OK', { skip: available ? false : 'systemd-analyze is not installed' }, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-unit-'));
    try {
      // The unit as shipped, with ExecStart pointing at a real executable (verify checks it exists).
      const unit = readFileSync(join(root, 'systemd', 'portcullis.service'), 'utf8');
      assert.match(unit, /^ExecStart=\/usr\/local\/bin\/portcullis serve --config \/etc\/portcullis\/portcullis\.yaml$/m);
      const file = join(dir, 'portcullis.service');
      writeFileSync(file, unit.replace(/^ExecStart=\/usr\/local\/bin\/portcullis /m, `ExecStart=${BINARY} `));
      const v = spawnSync(analyze, ['verify', '--man=no', file], { encoding: 'utf8' });
      assert.equal(v.status, 0, v.stdout + v.stderr);
      assert.equal(v.stderr.trim(), '', 'no warnings');
      for (const k of ['Type=notify', 'NotifyAccess=main', 'WatchdogSec=', 'User=portcullis', 'RuntimeDirectory=portcullis', 'StateDirectory=portcullis', 'ExecReload=/bin/kill -HUP $MAINPID', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE', 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6', 'SystemCallFilter=@system-service', 'LockPersonality=yes', 'MemoryDenyWriteExecute=no']) {
        assert.ok(unit.split('\n').some((l) => l.startsWith(k)), `unit has ${k}`);
      }
      const s = spawnSync(analyze, ['security', '--offline=yes', '--no-pager', file], { encoding: 'utf8' });
      assert.equal(s.status, 0, s.stdout + s.stderr);
      const m = /Overall exposure level for portcullis\.service: (\d+\.\d+) (\w+)/.exec(s.stdout);
      assert.ok(m, s.stdout);
      t.diagnostic(`systemd-analyze security --offline=yes: exposure ${m[1]} ${m[2]}`);
      assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]} (OK is below 4.0; this unit aims at <= 2.0)`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
