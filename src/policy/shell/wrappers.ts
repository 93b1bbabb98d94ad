// Commands that run another command: sudo, env, xargs, timeout, bash -c, find -exec, ... Each rule
// reads the wrapper's own options from its argv (already expanded into fields: this is argv
// analysis, not tokenizing a command line) and says where the wrapped command is: an argv slice,
// a string the wrapper hands to a shell, or the wrapper's stdin (a shell reading a script).

import { DYNAMIC, type Field } from './words.js';

export type Inner =
  /** The wrapped command's argv (its first field is the program). */
  | { kind: 'argv'; fields: Field[]; wrapper: string }
  /** A string the wrapper runs as a shell command line (literal: parse it; not literal: dynamic). */
  | { kind: 'string'; field: Field; wrapper: string }
  /**
   * A shell (or parallel, or `source /dev/stdin`) reading its commands from stdin: the content of a
   * here-document/here-string is parsed; from a pipe the commands are computed at run time.
   */
  | { kind: 'stdin'; shell: string }
  /** Cannot tell what runs (an option position holds a run-time value): a dynamic command. */
  | { kind: 'dynamic'; wrapper: string };

export interface Unwrapped {
  /** argv[0..ownEnd) are the wrapper's own options: flags are read from them only. */
  ownEnd: number;
  inners: Inner[];
  /** Flags of the wrapper when they are not read the generic way (find's primaries). */
  flags?: string[];
}

export const SHELLS: ReadonlySet<string> = new Set(['bash', 'sh', 'zsh', 'dash', 'ksh', 'ash', 'mksh', 'rbash', 'yash', 'posh']);

interface OptSpec {
  /** Short options that take an argument (attached `-uroot` or the next field). */
  short?: string;
  /** Short options whose argument may only be attached (`-i{}`, `-e`): consume the rest of the cluster. */
  shortOptional?: string;
  /** Long options that take an argument as the next field when not given as `--name=value`. */
  long?: readonly string[];
}

interface OptScan {
  /** Index of the first field after the options. */
  index: number;
  /** Option names seen (short letters and long names). */
  seen: Set<string>;
  /** Option values by name. */
  values: Map<string, Field>;
  /** Scanning stopped at a field that is not literal. */
  stoppedAtDynamic: boolean;
}

function attached(f: Field, value: string): Field {
  return { value, literal: f.literal, glob: false, pos: f.pos };
}

/** getopt-style scan that stops at the first operand (or `--`, consumed). */
function scanOptions(args: Field[], start: number, spec: OptSpec): OptScan {
  const seen = new Set<string>();
  const values = new Map<string, Field>();
  const short = spec.short ?? '';
  const shortOptional = spec.shortOptional ?? '';
  const long = spec.long ?? [];
  let i = start;
  while (i < args.length) {
    const f = args[i]!;
    if (!f.literal) return { index: i, seen, values, stoppedAtDynamic: true };
    const v = f.value;
    if (v === '--') return { index: i + 1, seen, values, stoppedAtDynamic: false };
    if (v.length < 2 || v[0] !== '-') break;
    if (v.startsWith('--')) {
      const eq = v.indexOf('=');
      const name = eq >= 0 ? v.slice(2, eq) : v.slice(2);
      seen.add(name);
      if (eq >= 0) values.set(name, attached(f, v.slice(eq + 1)));
      else if (long.includes(name) && i + 1 < args.length) {
        values.set(name, args[i + 1]!);
        i++;
      }
      i++;
      continue;
    }
    let consumedNext = false;
    for (let k = 1; k < v.length; k++) {
      const ch = v[k]!;
      seen.add(ch);
      if (short.includes(ch)) {
        if (k + 1 < v.length) values.set(ch, attached(f, v.slice(k + 1)));
        else if (i + 1 < args.length) {
          values.set(ch, args[i + 1]!);
          consumedNext = true;
        }
        break;
      }
      if (shortOptional.includes(ch)) {
        values.set(ch, attached(f, v.slice(k + 1)));
        break;
      }
    }
    i += consumedNext ? 2 : 1;
  }
  return { index: i, seen, values, stoppedAtDynamic: false };
}

const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;

function skipAssignments(args: Field[], start: number): number {
  let i = start;
  while (i < args.length && args[i]!.literal && ASSIGNMENT.test(args[i]!.value)) i++;
  return i;
}

function argvFrom(args: Field[], scan: OptScan, wrapper: string, from = scan.index): Unwrapped {
  if (scan.stoppedAtDynamic) return { ownEnd: scan.index, inners: [{ kind: 'argv', fields: args.slice(from), wrapper }] };
  if (from >= args.length) return { ownEnd: scan.index, inners: [] };
  return { ownEnd: scan.index, inners: [{ kind: 'argv', fields: args.slice(from), wrapper }] };
}

/** Fields joined with spaces, as `watch`/`eval`/`parallel` do before handing them to a shell. */
function joined(fields: Field[]): Field | null {
  if (fields.length === 0) return null;
  const literal = fields.every((f) => f.literal);
  return { value: literal ? fields.map((f) => f.value).join(' ') : DYNAMIC, literal, glob: false, pos: fields[0]!.pos };
}

function hasAny(seen: Set<string>, names: string[]): boolean {
  return names.some((n) => seen.has(n));
}

function unwrapShell(program: string, args: Field[]): Unwrapped {
  let i = 0;
  let sawC = false;
  let sawS = false;
  while (i < args.length) {
    const f = args[i]!;
    if (!f.literal) {
      if (f.procSubst === true) break; // `bash <(…)`: the script operand
      // An option or operand computed at run time: what the shell runs cannot be told.
      return { ownEnd: i, inners: [{ kind: 'dynamic', wrapper: sawC ? `${program} -c` : program }] };
    }
    const v = f.value;
    if (v === '--' || v === '-') {
      i++;
      break;
    }
    if (v.startsWith('--')) {
      i += v === '--rcfile' || v === '--init-file' ? 2 : 1;
      continue;
    }
    if ((v[0] === '-' || v[0] === '+') && v.length > 1) {
      let needArg = 0;
      for (const ch of v.slice(1)) {
        if (ch === 'c' && v[0] === '-') sawC = true;
        else if (ch === 's' && v[0] === '-') sawS = true;
        else if (ch === 'o' || ch === 'O') needArg++;
      }
      i += 1 + needArg;
      continue;
    }
    break;
  }
  if (sawC) {
    const f = args[i];
    return f === undefined ? { ownEnd: i, inners: [] } : { ownEnd: i, inners: [{ kind: 'string', field: f, wrapper: `${program} -c` }] };
  }
  if (i < args.length && !sawS) return { ownEnd: i, inners: scriptFile(program, args[i]!) };
  return { ownEnd: i, inners: [{ kind: 'stdin', shell: program }] };
}

/** Paths that are the reading process's own stdin. */
const STDIN_PATHS: ReadonlySet<string> = new Set(['/dev/stdin', '/dev/fd/0', '/proc/self/fd/0']);

/**
 * A script a shell (or `source`) runs from a file: its content is unknown, except that `<(…)` is
 * the output of commands (a script computed at run time) and /dev/stdin is the stdin.
 */
function scriptFile(program: string, f: Field): Inner[] {
  if (f.procSubst === true) return [{ kind: 'dynamic', wrapper: `${program} <(…)` }];
  if (f.literal && STDIN_PATHS.has(f.value)) return [{ kind: 'stdin', shell: program }];
  return [];
}

function unwrapSu(program: string, args: Field[]): Unwrapped {
  // util-linux su/runuser permute options: -c may come after the user name.
  let command: Field | null = null;
  for (let i = 0; i < args.length; i++) {
    const f = args[i]!;
    if (!f.literal) return { ownEnd: args.length, inners: [{ kind: 'dynamic', wrapper: `${program} -c` }] };
    const v = f.value;
    if (v === '--') {
      break;
    }
    if (v === '-c' || v === '--command' || v === '--session-command') {
      command = args[i + 1] ?? null;
      i++;
    } else if (v.startsWith('--command=') || v.startsWith('--session-command=')) {
      command = attached(f, v.slice(v.indexOf('=') + 1));
    } else if (v.startsWith('--')) {
      if (['--shell', '--group', '--supp-group', '--whitelist-environment', '--user'].includes(v)) i++;
    } else if (v[0] === '-' && v.length > 1) {
      for (let k = 1; k < v.length; k++) {
        const ch = v[k]!;
        if (ch === 'c') {
          command = k + 1 < v.length ? attached(f, v.slice(k + 1)) : (args[++i] ?? null);
          break;
        }
        if ('sgGwu'.includes(ch)) {
          if (k + 1 === v.length) i++;
          break;
        }
      }
    }
  }
  if (command !== null) return { ownEnd: args.length, inners: [{ kind: 'string', field: command, wrapper: `${program} -c` }] };
  if (program === 'runuser') {
    const scan = scanOptions(args, 0, { short: 'ugGsw', long: ['user', 'group', 'supp-group', 'shell', 'whitelist-environment'] });
    if (scan.seen.has('u') || scan.seen.has('user')) return argvFrom(args, scan, program);
  }
  return { ownEnd: args.length, inners: [] };
}

function unwrapFind(args: Field[]): Unwrapped {
  const flags: string[] = [];
  const inners: Inner[] = [];
  let i = 0;
  while (i < args.length) {
    const f = args[i]!;
    const v = f.value;
    if (f.literal && v.length > 1 && v[0] === '-') {
      const name = v.slice(1);
      flags.push(name);
      if (name === 'exec' || name === 'execdir' || name === 'ok' || name === 'okdir') {
        const start = i + 1;
        let end = start;
        while (end < args.length) {
          const a = args[end]!;
          if (a.literal && (a.value === ';' || (a.value === '+' && end > start && args[end - 1]!.value === '{}'))) break;
          end++;
        }
        if (end > start) inners.push({ kind: 'argv', fields: args.slice(start, end), wrapper: `find -${name}` });
        i = end + 1;
        continue;
      }
    }
    i++;
  }
  return { ownEnd: args.length, inners, flags };
}

const PARALLEL_SEPARATORS = new Set([':::', '::::', ':::+', '::::+']);

function unwrapParallel(args: Field[]): Unwrapped {
  const scan = scanOptions(args, 0, {
    short: 'aCdEIjPLNnS',
    long: ['arg-file', 'colsep', 'delimiter', 'jobs', 'max-procs', 'max-lines', 'max-args', 'max-replace-args', 'sshlogin', 'sshloginfile', 'slf', 'results', 'joblog', 'tmpdir', 'workdir', 'wd', 'delay', 'timeout', 'retries', 'halt', 'memfree', 'load', 'env', 'tag-string', 'basefile', 'return', 'transferfile'],
  });
  let end = scan.index;
  while (end < args.length && !(args[end]!.literal && PARALLEL_SEPARATORS.has(args[end]!.value))) end++;
  const cmd = joined(args.slice(scan.index, end));
  if (cmd === null) return { ownEnd: scan.index, inners: [{ kind: 'stdin', shell: 'parallel' }] };
  return { ownEnd: scan.index, inners: [{ kind: 'string', field: cmd, wrapper: 'parallel' }] };
}

/**
 * What `program args…` runs besides itself, or null when it is not a known wrapper. `program` is
 * the basename of a literal program word.
 */
export function unwrap(program: string, args: Field[]): Unwrapped | null {
  if (SHELLS.has(program)) return unwrapShell(program, args);
  switch (program) {
    case 'sudo': {
      // sudo's getopt string: "+Aa:BbC:c:D:Eeg:Hh::iKklNnPp:R:r:SsT:t:U:u:Vv" (-h takes an optional attached host).
      const scan = scanOptions(args, 0, {
        short: 'aCcDgpRrTtUu',
        shortOptional: 'h',
        long: ['auth-type', 'close-from', 'login-class', 'chdir', 'group', 'prompt', 'chroot', 'role', 'command-timeout', 'type', 'other-user', 'user'],
      });
      if (hasAny(scan.seen, ['e', 'edit', 'l', 'list', 'V', 'version'])) return { ownEnd: scan.index, inners: [] };
      return argvFrom(args, scan, 'sudo', scan.stoppedAtDynamic ? scan.index : skipAssignments(args, scan.index));
    }
    case 'doas': {
      const scan = scanOptions(args, 0, { short: 'Cu' });
      return argvFrom(args, scan, 'doas');
    }
    case 'pkexec': {
      const scan = scanOptions(args, 0, { long: ['user'] });
      return argvFrom(args, scan, 'pkexec');
    }
    case 'su':
    case 'runuser':
      return unwrapSu(program, args);
    case 'env': {
      const spec: OptSpec = { short: 'uCSPa', long: ['unset', 'chdir', 'split-string', 'argv0'] };
      let scan = scanOptions(args, 0, spec);
      // `env -` is `env -i`; options may follow it.
      while (!scan.stoppedAtDynamic && args[scan.index]?.literal === true && args[scan.index]!.value === '-') {
        const next = scanOptions(args, scan.index + 1, spec);
        next.seen.forEach((s) => scan.seen.add(s));
        next.values.forEach((v, k) => scan.values.set(k, v));
        scan = { ...next, seen: scan.seen, values: scan.values };
      }
      const split = scan.values.get('S') ?? scan.values.get('split-string');
      if (split !== undefined) return { ownEnd: scan.index, inners: [{ kind: 'string', field: split, wrapper: 'env -S' }] };
      return argvFrom(args, scan, 'env', scan.stoppedAtDynamic ? scan.index : skipAssignments(args, scan.index));
    }
    case 'xargs': {
      const scan = scanOptions(args, 0, {
        short: 'adEILnPs',
        shortOptional: 'eil',
        long: ['arg-file', 'delimiter', 'max-args', 'max-procs', 'max-chars', 'process-slot-var'],
      });
      return argvFrom(args, scan, 'xargs');
    }
    case 'nohup':
    case 'setsid':
    case 'builtin': {
      const scan = scanOptions(args, 0, {});
      return argvFrom(args, scan, program);
    }
    case 'command': {
      const scan = scanOptions(args, 0, {});
      if (scan.seen.has('v') || scan.seen.has('V')) return { ownEnd: scan.index, inners: [] };
      return argvFrom(args, scan, 'command');
    }
    case 'exec': {
      const scan = scanOptions(args, 0, { short: 'a' });
      return argvFrom(args, scan, 'exec');
    }
    case 'timeout': {
      const scan = scanOptions(args, 0, { short: 'ks', long: ['kill-after', 'signal'] });
      if (scan.stoppedAtDynamic) return argvFrom(args, scan, 'timeout');
      return argvFrom(args, scan, 'timeout', scan.index + 1); // skip DURATION
    }
    case 'nice': {
      const scan = scanOptions(args, 0, { short: 'n', long: ['adjustment'] });
      return argvFrom(args, scan, 'nice');
    }
    case 'ionice': {
      const scan = scanOptions(args, 0, { short: 'cn', long: ['class', 'classdata'] });
      if (hasAny(scan.seen, ['p', 'P', 'u', 'pid', 'pgid', 'uid'])) return { ownEnd: scan.index, inners: [] };
      return argvFrom(args, scan, 'ionice');
    }
    case 'stdbuf': {
      const scan = scanOptions(args, 0, { short: 'ioe', long: ['input', 'output', 'error'] });
      return argvFrom(args, scan, 'stdbuf');
    }
    case 'time': {
      const scan = scanOptions(args, 0, { short: 'fo', long: ['format', 'output'] });
      return argvFrom(args, scan, 'time');
    }
    case 'chroot': {
      const scan = scanOptions(args, 0, { long: ['userspec', 'groups'] });
      if (scan.stoppedAtDynamic) return argvFrom(args, scan, 'chroot');
      return argvFrom(args, scan, 'chroot', scan.index + 1); // skip NEWROOT
    }
    case 'flock': {
      const scan = scanOptions(args, 0, { short: 'wEc', long: ['timeout', 'wait', 'conflict-exit-code', 'command'] });
      const early = scan.values.get('c') ?? scan.values.get('command');
      if (early !== undefined) return { ownEnd: scan.index, inners: [{ kind: 'string', field: early, wrapper: 'flock -c' }] };
      if (scan.stoppedAtDynamic) return argvFrom(args, scan, 'flock');
      const after = args[scan.index + 1];
      if (after !== undefined && after.literal && (after.value === '-c' || after.value === '--command')) {
        const str = args[scan.index + 2];
        return { ownEnd: scan.index + 2, inners: str === undefined ? [] : [{ kind: 'string', field: str, wrapper: 'flock -c' }] };
      }
      return argvFrom(args, scan, 'flock', scan.index + 1); // skip FILE (or FD: nothing follows)
    }
    case 'watch': {
      const scan = scanOptions(args, 0, { short: 'nq', long: ['interval', 'equexit'] });
      if (scan.seen.has('x') || scan.seen.has('exec')) return argvFrom(args, scan, 'watch');
      if (scan.stoppedAtDynamic) return { ownEnd: scan.index, inners: [{ kind: 'dynamic', wrapper: 'watch' }] };
      const cmd = joined(args.slice(scan.index));
      return { ownEnd: scan.index, inners: cmd === null ? [] : [{ kind: 'string', field: cmd, wrapper: 'watch' }] };
    }
    case 'eval': {
      const cmd = joined(args);
      return { ownEnd: 0, inners: cmd === null ? [] : [{ kind: 'string', field: cmd, wrapper: 'eval' }] };
    }
    case 'trap': {
      let i = 0;
      if (args[0]?.literal === true && args[0].value === '--') i = 1;
      const action = args[i];
      if (action === undefined || args.length - i < 2) return { ownEnd: 0, inners: [] };
      if (action.literal && (action.value === '-' || action.value === '' || action.value.startsWith('-'))) return { ownEnd: 0, inners: [] };
      return { ownEnd: 0, inners: [{ kind: 'string', field: action, wrapper: 'trap' }] };
    }
    case 'busybox':
    case 'toybox': {
      const first = args[0];
      if (first === undefined || (first.literal && first.value.startsWith('-'))) return { ownEnd: args.length, inners: [] };
      return { ownEnd: 0, inners: [{ kind: 'argv', fields: args, wrapper: program }] };
    }
    case 'source':
    case '.': {
      const scan = scanOptions(args, 0, {});
      const file = args[scan.index];
      if (file === undefined) return { ownEnd: scan.index, inners: [] };
      return { ownEnd: scan.index, inners: scriptFile(program, file) };
    }
    case 'find':
      return unwrapFind(args);
    case 'parallel':
      return unwrapParallel(args);
    default:
      return null;
  }
}
