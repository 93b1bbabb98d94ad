// Target routing in the SSH user name: `identity+target@bastion`. The identity is everything
// before the last `+` (target names never contain one: config.ts allows [A-Za-z0-9._-]), so a
// subject like `ci+deploy@example.com+web-1` still splits right. Without a `+`, the identity's
// default target from the config (`ssh.default_targets`) is used, else `*`'s, else none.

export interface Login {
  subject: string;
  /** The target named in the user name, or undefined when there was none. */
  target?: string;
}

const TARGET = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function parseLogin(user: string): Login {
  const i = user.lastIndexOf('+');
  if (i > 0 && i < user.length - 1) {
    const target = user.slice(i + 1);
    if (TARGET.test(target)) return { subject: user.slice(0, i), target };
  }
  return { subject: user };
}

/** The target a login goes to: the named one, else the identity's default, else `*`'s default. */
export function resolveTarget(login: Login, defaults: ReadonlyMap<string, string> | undefined): string | undefined {
  return login.target ?? defaults?.get(login.subject) ?? defaults?.get('*');
}

/** Environment variables an agent may pass to the target (SendEnv / SetEnv). */
export function envAllowed(name: string): boolean {
  return name === 'LANG' || name === 'TERM' || name === 'PORTCULLIS_REASON' || /^LC_[A-Z_]+$/.test(name);
}
