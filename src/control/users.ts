// uid → user name and groups, for the control socket's operator identity. Read from /etc/passwd and
// /etc/group (re-read when either file changes); a uid or group that is not in those files (NSS:
// LDAP, sssd) is looked up with `getent`, which asks the same NSS the kernel's users come from.
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';

export interface UnixUser {
  uid: number;
  /** The login name, or `uid:N` when the uid has no passwd entry. */
  name: string;
  /** Primary gid, when known. */
  gid: number | null;
  /** Names of every group the user is in (primary included). */
  groups: string[];
  /** False when the uid has no passwd entry at all. */
  known: boolean;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 4) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!f[0] || !Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({ name: f[0], uid, gid });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 3) continue;
    const gid = Number(f[2]);
    if (!f[0] || !Number.isInteger(gid)) continue;
    out.push({ name: f[0], gid, members: (f[3] ?? '').split(',').map((m) => m.trim()).filter(Boolean) });
  }
  return out;
}

function getent(db: string, key: string): string | null {
  try {
    return execFileSync('getent', [db, key], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).trim() || null;
  } catch {
    return null;
  }
}

export class UserDb {
  private stamp = '';
  private passwd: PasswdEntry[] = [];
  private groups: GroupEntry[] = [];

  constructor(private readonly files = { passwd: '/etc/passwd', group: '/etc/group' }) {}

  private refresh(): void {
    let stamp = '';
    for (const f of [this.files.passwd, this.files.group]) {
      try {
        const st = statSync(f);
        stamp += `${st.mtimeMs}:${st.size}:${st.ino};`;
      } catch {
        stamp += 'missing;';
      }
    }
    if (stamp === this.stamp) return;
    const read = (f: string) => {
      try {
        return readFileSync(f, 'utf8');
      } catch {
        return '';
      }
    };
    this.passwd = parsePasswd(read(this.files.passwd));
    this.groups = parseGroup(read(this.files.group));
    this.stamp = stamp;
  }

  /** The user of a uid, with every group it is in. */
  byUid(uid: number): UnixUser {
    this.refresh();
    let pw: PasswdEntry | undefined = this.passwd.find((p) => p.uid === uid);
    if (!pw) {
      const line = getent('passwd', String(uid));
      const parsed = line ? parsePasswd(line)[0] : undefined;
      if (parsed && parsed.uid === uid) pw = parsed;
    }
    if (!pw) return { uid, name: `uid:${uid}`, gid: null, groups: [], known: false };
    const groups = new Set<string>();
    for (const g of this.groups) if (g.gid === pw.gid || g.members.includes(pw.name)) groups.add(g.name);
    if (![...this.groups].some((g) => g.gid === pw.gid)) {
      const line = getent('group', String(pw.gid));
      const parsed = line ? parseGroup(line)[0] : undefined;
      if (parsed) groups.add(parsed.name);
    }
    return { uid, name: pw.name, gid: pw.gid, groups: [...groups].sort(), known: true };
  }

  /** Whether `user` is a member of group `name` (primary gid or member list; NSS groups via getent). */
  inGroup(user: UnixUser, name: string): boolean {
    if (user.groups.includes(name)) return true;
    this.refresh();
    if (this.groups.some((g) => g.name === name)) return false;
    const line = getent('group', name);
    const g = line ? parseGroup(line)[0] : undefined;
    return !!g && (g.gid === user.gid || g.members.includes(user.name));
  }
}
