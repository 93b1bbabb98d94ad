// Shell fact extraction with the real bash parser (mvdan-sh): every simple command wherever it
// stands, wrappers unwrapped, dynamic words marked, parse errors with positions.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { PortcullisError, type ShellCommand } from '../src/policy/types.js';
import { DYNAMIC, clearShellFactsCache, parseFlags, shellFacts, shellFactsCached } from '../src/policy/shell/index.js';
import { LruCache } from '../src/policy/shell/cache.js';
import { decodeAnsiC } from '../src/policy/shell/words.js';

const D = DYNAMIC;

/** Expected facts: only the listed keys are compared (exactly); the command count and order are exact. */
type Expect = Partial<ShellCommand>;

function check(line: string, expected: Expect[]): void {
  const facts = shellFacts(line);
  const dump = JSON.stringify(facts.commands, null, 1).replaceAll('\\u0000dynamic', '<DYN>');
  assert.equal(facts.commands.length, expected.length, `${JSON.stringify(line)}: command count\n${dump}`);
  expected.forEach((exp, i) => {
    const got = facts.commands[i]!;
    for (const key of Object.keys(exp) as (keyof ShellCommand)[]) {
      assert.deepEqual(got[key], exp[key], `${JSON.stringify(line)}: command ${i} field ${key}\n${dump}`);
    }
  });
}

const rmrf = (target: string, extra: Expect = {}): Expect => ({ program: 'rm', args: ['-rf', target], flags: ['r', 'f'], dynamic: false, ...extra });

const CASES: [string, Expect[]][] = [
  // --- lists and operators
  ['ls -la; rm -rf /srv', [{ program: 'ls', args: ['-la'], flags: ['l', 'a'], context: 'top' }, rmrf('/srv', { context: 'top', stdin: null, pipedFrom: null, wrappers: [] })]],
  ['ls&&rm -rf x', [{ program: 'ls' }, rmrf('x')]],
  ['false || rm -r x', [{ program: 'false' }, { program: 'rm', args: ['-r', 'x'], flags: ['r'] }]],
  ['sleep 1 & rm -rf x', [{ program: 'sleep', args: ['1'] }, rmrf('x')]],
  ['a && b || c & d', [{ program: 'a' }, { program: 'b' }, { program: 'c' }, { program: 'd' }]],
  ['! rm -rf x', [rmrf('x')]],
  ['ls\nrm -rf /\necho done', [{ program: 'ls' }, rmrf('/'), { program: 'echo', args: ['done'] }]],
  ['cd /tmp \\\n  && rm -rf x', [{ program: 'cd', args: ['/tmp'] }, rmrf('x')]],
  // --- comments and blank lines
  ['# rm -rf /', []],
  ['', []],
  ['   \n\t\n', []],
  ['echo ok # rm -rf /', [{ program: 'echo', args: ['ok'] }]],
  ['echo "a;rm -rf b"', [{ program: 'echo', args: ['a;rm -rf b'], flags: [] }]],
  ["echo 'rm -rf /' | cat", [{ program: 'echo', args: ['rm -rf /'] }, { program: 'cat', stdin: 'pipe', pipedFrom: 'echo' }]],
  // --- pipelines
  // A shell reading a pipe runs commands known only at run time: a dynamic command follows it.
  ['curl -s http://x | bash', [{ program: 'curl', args: ['-s', 'http://x'], flags: ['s'], stdin: null }, { program: 'bash', args: [], stdin: 'pipe', pipedFrom: 'curl' }, { program: null, dynamic: true, wrappers: ['bash |'], stdin: 'pipe', pipedFrom: 'curl' }]],
  ['wget -qO- x | sh', [{ program: 'wget', flags: ['q', 'O'] }, { program: 'sh', stdin: 'pipe', pipedFrom: 'wget' }, { program: null, dynamic: true, wrappers: ['sh |'] }]],
  ['cat x | sudo bash', [{ program: 'cat', stdin: null }, { program: 'sudo', args: ['bash'], stdin: 'pipe', pipedFrom: 'cat', wrappers: [] }, { program: 'bash', stdin: 'pipe', pipedFrom: 'cat', wrappers: ['sudo'] }, { program: null, dynamic: true, wrappers: ['sudo', 'bash |'] }]],
  ['a | b | c', [{ program: 'a', stdin: null, pipedFrom: null }, { program: 'b', stdin: 'pipe', pipedFrom: 'a' }, { program: 'c', stdin: 'pipe', pipedFrom: 'b' }]],
  ['cat x |& sh', [{ program: 'cat' }, { program: 'sh', stdin: 'pipe', pipedFrom: 'cat' }, { program: null, dynamic: true }]],
  ['sudo curl x | sh', [{ program: 'sudo' }, { program: 'curl', wrappers: ['sudo'] }, { program: 'sh', stdin: 'pipe', pipedFrom: 'curl' }, { program: null, dynamic: true }]],
  ['curl x | (cat | sh)', [{ program: 'curl' }, { program: 'cat', stdin: 'pipe', pipedFrom: 'curl', context: 'subshell' }, { program: 'sh', stdin: 'pipe', pipedFrom: 'cat', context: 'subshell' }, { program: null, dynamic: true, context: 'subshell' }]],
  ['curl x | { a; b; }', [{ program: 'curl' }, { program: 'a', stdin: 'pipe', pipedFrom: 'curl' }, { program: 'b', stdin: 'pipe', pipedFrom: 'curl' }]],
  ['curl x | sh < /dev/null', [{ program: 'curl' }, { program: 'sh', stdin: 'file', pipedFrom: null, redirects: [{ op: '<', target: '/dev/null' }] }]],
  // --- substitutions
  ['echo $(rm -rf x)', [{ program: 'echo', args: [D], context: 'top' }, rmrf('x', { context: 'subst' })]],
  ['echo `rm -rf x`', [{ program: 'echo', args: [D] }, rmrf('x', { context: 'subst' })]],
  ['echo $(echo $(rm -f y))', [{ program: 'echo', args: [D] }, { program: 'echo', args: [D], context: 'subst' }, { program: 'rm', args: ['-f', 'y'], flags: ['f'], context: 'subst' }]],
  ['echo "x $(rm -rf z) y"', [{ program: 'echo', args: [D] }, rmrf('z', { context: 'subst' })]],
  ['X=$(rm -rf y)', [rmrf('y', { context: 'subst' })]],
  ['echo hi > "$(rm -rf x)"', [{ program: 'echo', redirects: [{ op: '>', target: D }] }, rmrf('x', { context: 'subst' })]],
  ['echo ${a:-$(rm -rf x)}', [{ program: 'echo', args: [D] }, rmrf('x', { context: 'subst' })]],
  ['echo $(( $(rm -rf x) + 1 ))', [{ program: 'echo', args: [D] }, rmrf('x', { context: 'subst' })]],
  ['(( 1 + 2 ))', []],
  ['diff <(ls a) <(ls b)', [{ program: 'diff', args: [D, D] }, { program: 'ls', args: ['a'], context: 'proc-subst' }, { program: 'ls', args: ['b'], context: 'proc-subst' }]],
  ['curl x | tee >(sh) > /dev/null', [{ program: 'curl' }, { program: 'tee', args: [D], stdin: 'pipe' }, { program: 'sh', context: 'proc-subst', stdin: 'pipe', pipedFrom: 'tee' }, { program: null, dynamic: true, wrappers: ['sh |'], context: 'proc-subst' }]],
  ['cat <<EOF\n$(rm -rf /)\nEOF', [{ program: 'cat', stdin: 'heredoc', redirects: [{ op: '<<', target: 'EOF' }] }, rmrf('/', { context: 'subst', stdin: null })]],
  ["cat <<'EOF'\n$(rm -rf /)\nEOF", [{ program: 'cat', stdin: 'heredoc' }]],
  // --- shells running strings
  ["bash -c 'rm -rf /'", [{ program: 'bash', args: ['-c', 'rm -rf /'], flags: ['c'], wrappers: [] }, rmrf('/', { wrappers: ['bash -c'], context: 'top' })]],
  ['sh -c "ls; rm -fr x"', [{ program: 'sh' }, { program: 'ls', wrappers: ['sh -c'] }, { program: 'rm', args: ['-fr', 'x'], flags: ['f', 'r'], wrappers: ['sh -c'] }]],
  ['bash -c "$CMD"', [{ program: 'bash', args: ['-c', D] }, { program: null, dynamic: true, args: [], wrappers: ['bash -c'] }]],
  ['bash -o pipefail -xc "rm -rf x"', [{ program: 'bash', flags: ['o', 'x', 'c'] }, rmrf('x', { wrappers: ['bash -c'] })]],
  ["sh -c 'rm -rf \"$1\"' sh /", [{ program: 'sh', flags: ['c'] }, { program: 'rm', args: ['-rf', D], flags: ['r', 'f'], wrappers: ['sh -c'] }]],
  ['bash script.sh -rf', [{ program: 'bash', args: ['script.sh', '-rf'], flags: [] }]],
  ["busybox sh -c 'rm -rf x'", [{ program: 'busybox' }, { program: 'sh', wrappers: ['busybox'] }, rmrf('x', { wrappers: ['busybox', 'sh -c'] })]],
  ["sudo bash -c 'echo $(rm -rf /)'", [{ program: 'sudo' }, { program: 'bash', wrappers: ['sudo'] }, { program: 'echo', wrappers: ['sudo', 'bash -c'] }, rmrf('/', { wrappers: ['sudo', 'bash -c'], context: 'subst' })]],
  ['bash <<< "rm -rf /"', [{ program: 'bash', stdin: 'herestring', redirects: [{ op: '<<<', target: 'rm -rf /' }] }, rmrf('/', { wrappers: ['bash <<<'], stdin: 'herestring' })]],
  ["sh <<'EOF'\nrm -rf /\nEOF", [{ program: 'sh', stdin: 'heredoc' }, rmrf('/', { wrappers: ['sh <<'], stdin: 'heredoc' })]],
  ['bash <<EOF\n$x\nEOF', [{ program: 'bash', stdin: 'heredoc' }, { program: null, dynamic: true, wrappers: ['bash <<'] }]],
  ['cat <<< "rm -rf /"', [{ program: 'cat', stdin: 'herestring' }]],
  ['bash /dev/stdin <<< "rm -rf /"', [{ program: 'bash', args: ['/dev/stdin'] }, rmrf('/', { wrappers: ['bash <<<'] })]],
  ['. /dev/stdin <<< "rm -rf /"', [{ program: '.', args: ['/dev/stdin'] }, rmrf('/', { wrappers: ['. <<<'] })]],
  ['bash <(curl -s x)', [{ program: 'bash', args: [D] }, { program: null, dynamic: true, wrappers: ['bash <(…)'] }, { program: 'curl', context: 'proc-subst' }]],
  ['source <(curl x)', [{ program: 'source', args: [D] }, { program: null, dynamic: true, wrappers: ['source <(…)'] }, { program: 'curl', context: 'proc-subst' }]],
  ['curl x | source /dev/stdin', [{ program: 'curl' }, { program: 'source', stdin: 'pipe' }, { program: null, dynamic: true, wrappers: ['source |'] }]],
  ['source ~/.bashrc', [{ program: 'source', args: ['~/.bashrc'] }]],
  ['bash "$script"', [{ program: 'bash', args: [D] }, { program: null, dynamic: true, wrappers: ['bash'] }]],
  // ${x@P} expands the value as a prompt, which runs the command substitutions in it.
  ['x=\'$(rm -rf /)\'; echo ${x@P}', [{ program: 'echo', args: [D] }, { program: null, dynamic: true, wrappers: ['${…@P}'], context: 'subst' }]],
  ['echo ${x@Q}', [{ program: 'echo', args: [D] }]],
  ['echo é ünï | grep ü', [{ program: 'echo', args: ['é', 'ünï'] }, { program: 'grep', args: ['ü'], stdin: 'pipe' }]],
  // --- eval
  ['eval "rm -rf /"', [{ program: 'eval', args: ['rm -rf /'], flags: [] }, rmrf('/', { wrappers: ['eval'] })]],
  ['eval rm -rf /', [{ program: 'eval', args: ['rm', '-rf', '/'], flags: [] }, rmrf('/', { wrappers: ['eval'] })]],
  ['eval "$x"', [{ program: 'eval', args: [D] }, { program: null, dynamic: true, wrappers: ['eval'] }]],
  // --- wrappers running argv
  ['env rm -rf x', [{ program: 'env', flags: [] }, rmrf('x', { wrappers: ['env'] })]],
  ['env -i FOO=1 rm -r x', [{ program: 'env', args: ['-i', 'FOO=1', 'rm', '-r', 'x'], flags: ['i'] }, { program: 'rm', args: ['-r', 'x'], flags: ['r'], wrappers: ['env'] }]],
  ['/usr/bin/env -u HOME - PATH=/x rm -rf y', [{ program: 'env', flags: ['u'] }, rmrf('y', { wrappers: ['env'] })]],
  ["env -S 'rm -rf x'", [{ program: 'env' }, rmrf('x', { wrappers: ['env -S'] })]],
  ['sudo rm -rf /', [{ program: 'sudo', args: ['rm', '-rf', '/'], flags: [] }, rmrf('/', { wrappers: ['sudo'] })]],
  ['sudo -u root -- ls', [{ program: 'sudo', args: ['-u', 'root', '--', 'ls'], flags: ['u'] }, { program: 'ls', args: [], wrappers: ['sudo'] }]],
  ['sudo -E -u postgres FOO=1 rm -rf /', [{ program: 'sudo', flags: ['E', 'u'] }, rmrf('/', { wrappers: ['sudo'] })]],
  ['sudo -l rm', [{ program: 'sudo', flags: ['l'] }]],
  ['doas -u root rm -rf x', [{ program: 'doas' }, rmrf('x', { wrappers: ['doas'] })]],
  ['su - root -c "rm -rf /"', [{ program: 'su', flags: ['c'] }, rmrf('/', { wrappers: ['su -c'] })]],
  ['su -', [{ program: 'su', args: ['-'] }]],
  ['xargs rm -rf', [{ program: 'xargs', args: ['rm', '-rf'], flags: [] }, { program: 'rm', args: ['-rf'], flags: ['r', 'f'], wrappers: ['xargs'] }]],
  ['find . -name "*.log" | xargs -0 -n 1 -I{} rm -rf {}', [{ program: 'find' }, { program: 'xargs', stdin: 'pipe', pipedFrom: 'find', flags: ['0', 'n', 'I'] }, rmrf('{}', { wrappers: ['xargs'], stdin: 'pipe', pipedFrom: 'find' })]],
  ['find . -name x -exec rm -rf {} \\;', [{ program: 'find', args: ['.', '-name', 'x', '-exec', 'rm', '-rf', '{}', ';'], flags: ['name', 'exec'] }, rmrf('{}', { wrappers: ['find -exec'] })]],
  ["find / -execdir rm -f {} + -ok shred {} ';'", [{ program: 'find', flags: ['execdir', 'ok'] }, { program: 'rm', args: ['-f', '{}'], wrappers: ['find -execdir'] }, { program: 'shred', args: ['{}'], wrappers: ['find -ok'] }]],
  ['nohup rm -rf x &', [{ program: 'nohup' }, rmrf('x', { wrappers: ['nohup'] })]],
  ['timeout 5 rm -rf x', [{ program: 'timeout', args: ['5', 'rm', '-rf', 'x'], flags: [] }, rmrf('x', { wrappers: ['timeout'] })]],
  ['timeout -s KILL --kill-after=3 5s rm -rf x', [{ program: 'timeout', flags: ['s', 'kill-after'] }, rmrf('x', { wrappers: ['timeout'] })]],
  ['nice -n 10 rm -rf x', [{ program: 'nice', flags: ['n'] }, rmrf('x', { wrappers: ['nice'] })]],
  ['ionice -c3 setsid stdbuf -oL rm -rf x', [{ program: 'ionice' }, { program: 'setsid', wrappers: ['ionice'] }, { program: 'stdbuf', wrappers: ['ionice', 'setsid'] }, rmrf('x', { wrappers: ['ionice', 'setsid', 'stdbuf'] })]],
  ['time rm -rf x', [{ program: 'time', args: [] }, rmrf('x', { wrappers: ['time'] })]],
  ['time -p { rm -rf x; }', [{ program: 'time', args: ['-p'], flags: ['p'] }, rmrf('x', { wrappers: ['time'] })]],
  ['/usr/bin/time -v rm -rf x', [{ program: 'time', flags: ['v'] }, rmrf('x', { wrappers: ['time'] })]],
  ['command rm -rf x', [{ program: 'command' }, rmrf('x', { wrappers: ['command'] })]],
  ['command -v rm', [{ program: 'command', args: ['-v', 'rm'], flags: ['v'] }]],
  ['builtin exec rm -rf x', [{ program: 'builtin' }, { program: 'exec', wrappers: ['builtin'] }, rmrf('x', { wrappers: ['builtin', 'exec'] })]],
  ['chroot /mnt rm -rf x', [{ program: 'chroot' }, rmrf('x', { wrappers: ['chroot'] })]],
  ["watch -n 1 'rm -rf x; ls'", [{ program: 'watch', flags: ['n'] }, rmrf('x', { wrappers: ['watch'] }), { program: 'ls', wrappers: ['watch'] }]],
  ['flock /tmp/l rm -rf x', [{ program: 'flock' }, rmrf('x', { wrappers: ['flock'] })]],
  ['flock /tmp/l -c "rm -rf x"', [{ program: 'flock' }, rmrf('x', { wrappers: ['flock -c'] })]],
  ["trap 'rm -rf x' EXIT", [{ program: 'trap' }, rmrf('x', { wrappers: ['trap'] })]],
  ['busybox rm -rf x', [{ program: 'busybox', flags: [] }, rmrf('x', { wrappers: ['busybox'] })]],
  ['parallel rm -rf ::: a b', [{ program: 'parallel' }, { program: 'rm', args: ['-rf'], flags: ['r', 'f'], wrappers: ['parallel'] }]],
  ['echo rm -rf / | parallel', [{ program: 'echo' }, { program: 'parallel', stdin: 'pipe' }, { program: null, dynamic: true, wrappers: ['parallel |'] }]],
  ['sudo $cmd -rf /', [{ program: 'sudo' }, { program: null, dynamic: true, args: ['-rf', '/'], wrappers: ['sudo'] }]],
  ['sudo -e /etc/passwd', [{ program: 'sudo', flags: ['e'] }]],
  ['sudo bash <<< "rm -rf /"', [{ program: 'sudo', stdin: 'herestring' }, { program: 'bash', wrappers: ['sudo'] }, rmrf('/', { wrappers: ['sudo', 'bash <<<'] })]],
  ['runuser -u bob -- rm -rf x', [{ program: 'runuser', flags: ['u'] }, rmrf('x', { wrappers: ['runuser'] })]],
  ['pkexec --user root rm -rf x', [{ program: 'pkexec', flags: ['user'] }, rmrf('x', { wrappers: ['pkexec'] })]],
  ['exec -a name rm -rf x', [{ program: 'exec', flags: ['a'] }, rmrf('x', { wrappers: ['exec'] })]],
  ['ionice -p 123', [{ program: 'ionice', flags: ['p'] }]],
  ['timeout "$t" rm -rf x', [{ program: 'timeout' }, { program: null, dynamic: true, wrappers: ['timeout'] }]],
  ['xargs -a list -n 2 rm -f', [{ program: 'xargs', flags: ['a', 'n'] }, { program: 'rm', args: ['-f'], wrappers: ['xargs'] }]],
  // --- dynamic program words
  ['$cmd -rf /', [{ program: null, dynamic: true, args: ['-rf', '/'] }]],
  ['$(echo rm) -rf /', [{ program: null, dynamic: true, args: ['-rf', '/'] }, { program: 'echo', args: ['rm'], context: 'subst' }]],
  ['`echo rm` -rf /', [{ program: null, dynamic: true }, { program: 'echo', context: 'subst' }]],
  ['${X} -rf /', [{ program: null, dynamic: true }]],
  ['"$a" x', [{ program: null, dynamic: true, args: ['x'] }]],
  ['r$x -rf /', [{ program: null, dynamic: true }]],
  ['/bin/r? -rf /', [{ program: null, dynamic: true }]],
  // --- literal program words
  ["'r'm -rf x", [rmrf('x')]],
  ["r''m -rf x", [rmrf('x')]],
  ['\\rm -rf x', [rmrf('x')]],
  ['"/bin/rm" -rf x', [rmrf('x')]],
  ["$'\\x72m' -rf /", [rmrf('/')]],
  ['{rm,-rf,/}', [rmrf('/')]],
  ['rm {-rf,/tmp/x}', [rmrf('/tmp/x')]],
  ['FOO=1 rm -rf x', [rmrf('x')]],
  ['FOO=1 BAR="$(id)" rm -rf x', [rmrf('x'), { program: 'id', context: 'subst' }]],
  // --- flags
  ['rm x -rf', [{ program: 'rm', args: ['x', '-rf'], flags: ['r', 'f'] }]],
  ['rm -r -f x', [{ program: 'rm', flags: ['r', 'f'] }]],
  ['rm --recursive --force=yes x', [{ program: 'rm', flags: ['recursive', 'force'] }]],
  ['rm -- -rf', [{ program: 'rm', args: ['--', '-rf'], flags: [] }]],
  ['rm "-rf" x', [rmrf('x')]],
  ['rm $opts x', [{ program: 'rm', args: [D, 'x'], flags: [] }]],
  // --- reference-policy commands
  ['mkfs.ext4 /dev/sda', [{ program: 'mkfs.ext4', args: ['/dev/sda'], flags: [] }]],
  ['dd if=/dev/zero of=/dev/sda', [{ program: 'dd', args: ['if=/dev/zero', 'of=/dev/sda'], flags: [] }]],
  ['kill -9 1', [{ program: 'kill', args: ['-9', '1'], flags: ['9'] }]],
  ['chmod -R 777 /', [{ program: 'chmod', args: ['-R', '777', '/'], flags: ['R'] }]],
  ['shutdown -h now', [{ program: 'shutdown', args: ['-h', 'now'], flags: ['h'] }]],
  // --- compound commands
  ['f(){ rm -rf /; }; f', [rmrf('/', { context: 'function' }), { program: 'f', context: 'top' }]],
  ['function g { rm -rf x; }', [rmrf('x', { context: 'function' })]],
  ['if true; then rm -rf x; fi', [{ program: 'true' }, rmrf('x', { context: 'top' })]],
  ['if [ -d x ]; then :; elif rm -rf y; then :; else rm -f z; fi', [{ program: '[', args: ['-d', 'x', ']'] }, { program: ':' }, rmrf('y'), { program: ':' }, { program: 'rm', args: ['-f', 'z'] }]],
  ['while read l; do rm "$l"; done < list', [{ program: 'read', stdin: 'file' }, { program: 'rm', args: [D], stdin: 'file', redirects: [{ op: '<', target: 'list' }] }]],
  ['for f in *; do rm -f $f; done', [{ program: 'rm', args: ['-f', D], flags: ['f'] }]],
  ['for f in $(ls); do :; done', [{ program: 'ls', context: 'subst' }, { program: ':' }]],
  ['case $(uname) in Linux) rm -rf x;; *) ls;; esac', [{ program: 'uname', context: 'subst' }, rmrf('x'), { program: 'ls' }]],
  ['[[ -n $(rm -rf x) ]]', [rmrf('x', { context: 'subst' })]],
  ['(cd /; rm -rf x)', [{ program: 'cd', args: ['/'], context: 'subshell' }, rmrf('x', { context: 'subshell' })]],
  ['{ rm -rf x; }', [rmrf('x', { context: 'top' })]],
  ['{ echo a; echo b; } > /etc/motd', [{ program: 'echo', redirects: [{ op: '>', target: '/etc/motd' }] }, { program: 'echo', redirects: [{ op: '>', target: '/etc/motd' }] }]],
  ['coproc rm -rf x', [rmrf('x')]],
  ['export A=$(rm -rf x) B', [{ program: 'export', args: [D, 'B'] }, rmrf('x', { context: 'subst' })]],
  ['local -r X=1', [{ program: 'local', args: ['-r', 'X=1'], flags: ['r'] }]],
  // --- redirections
  ['echo x > /etc/passwd', [{ program: 'echo', args: ['x'], redirects: [{ op: '>', target: '/etc/passwd' }], stdin: null }]],
  ['cat < /etc/shadow', [{ program: 'cat', args: [], stdin: 'file', redirects: [{ op: '<', target: '/etc/shadow' }] }]],
  ['ls 2>&1 >>log &> all', [{ program: 'ls', redirects: [{ op: '2>&', target: '1' }, { op: '>>', target: 'log' }, { op: '&>', target: 'all' }] }]],
  ['> /etc/passwd', [{ program: null, dynamic: false, args: [], redirects: [{ op: '>', target: '/etc/passwd' }] }]],
  ['cat <<-EOF\n\tx\n\tEOF', [{ program: 'cat', stdin: 'heredoc', redirects: [{ op: '<<-', target: 'EOF' }] }]],
  ['sudo rm x > /root/log', [{ program: 'sudo', redirects: [{ op: '>', target: '/root/log' }] }, { program: 'rm', redirects: [{ op: '>', target: '/root/log' }], wrappers: ['sudo'] }]],
];

describe('shellFacts: every simple command, exact facts', () => {
  for (const [line, expected] of CASES) {
    test(JSON.stringify(line), () => check(line, expected));
  }
});

describe('shellFacts: parse errors', () => {
  const ERRORS: [string, number, number][] = [
    ["echo 'abc", 1, 6],
    ['echo "abc', 1, 6],
    ['if true; then', 1, 10],
    ['$(', 1, 1],
    ['ls |', 1, 4],
    ['ls\necho `x', 2, 6],
    ['cat <<EOF\nabc', 1, 5],
    ['for x in a; do', 1, 13],
    ['}', 1, 1],
    // Columns count characters, not UTF-8 bytes.
    ['echo é |', 1, 8],
    // A parser limitation: $'…' inside backquotes does not parse (bash accepts it). Fails closed.
    ["echo `echo $'a'`", 1, 16],
  ];
  for (const [line, l, c] of ERRORS) {
    test(`${JSON.stringify(line)} → shell_parse_error at ${l}:${c}`, () => {
      assert.throws(
        () => shellFacts(line),
        (e: unknown) => {
          assert.ok(e instanceof PortcullisError, 'a PortcullisError');
          assert.equal(e.code, 'shell_parse_error');
          assert.equal(e.details['line'], l);
          assert.equal(e.details['column'], c);
          assert.match(e.message, new RegExp(`^command line: ${l}:${c}: `));
          return true;
        },
      );
    });
  }

  test('an unparsable string inside bash -c is an error at the string, with the inner position', () => {
    assert.throws(
      () => shellFacts(`ls; bash -c 'echo "x'`),
      (e: unknown) => {
        assert.ok(e instanceof PortcullisError);
        assert.equal(e.code, 'shell_parse_error');
        assert.deepEqual(
          { line: e.details['line'], column: e.details['column'], nestedLine: e.details['nestedLine'], nestedColumn: e.details['nestedColumn'], wrapper: e.details['wrapper'] },
          { line: 1, column: 13, nestedLine: 1, nestedColumn: 6, wrapper: 'bash -c' },
        );
        return true;
      },
    );
  });

  test('backquote forms the parser reads differently from bash are refused (fail closed)', () => {
    // bash ends `…` at the first unescaped backquote even inside quotes: here `ls` and `rm` run.
    const hidden = "ls `echo 'x`; rm -f victim; `'`";
    assert.throws(() => shellFacts(hidden), (e: unknown) => e instanceof PortcullisError && e.code === 'shell_parse_error' && e.details['reason'] === 'backquotes' && e.details['line'] === 1);
    assert.throws(() => shellFacts('echo "`echo \'x`" rm -rf y "`\'`"'), (e: unknown) => e instanceof PortcullisError && e.details['reason'] === 'backquotes');
    // Three levels of backquotes: bash runs the printf; the parser would see an echo argument.
    const deep = 'echo `echo \\`echo \\\\\\`rm -rf /srv\\\\\\`\\``';
    assert.throws(() => shellFacts(deep), (e: unknown) => e instanceof PortcullisError && e.details['reason'] === 'backquotes');
    // Two levels without backslashes inside are read as bash reads them.
    check('echo `echo \\`rm -rf /srv\\``', [{ program: 'echo' }, { program: 'echo', context: 'subst' }, rmrf('/srv', { context: 'subst' })]);
  });

  test('a NUL byte is refused with its position', () => {
    assert.throws(
      () => shellFacts('ls\nrm\u0000 -rf /'),
      (e: unknown) => e instanceof PortcullisError && e.code === 'shell_parse_error' && e.details['line'] === 2 && e.details['column'] === 3,
    );
  });

  test('wrappers nested past the limit are refused, not truncated', () => {
    const ok = shellFacts('sudo '.repeat(31) + 'rm -rf x');
    assert.equal(ok.commands.length, 32);
    assert.deepEqual(ok.commands[31]!.wrappers.length, 31);
    assert.equal(ok.commands[31]!.program, 'rm');
    assert.throws(() => shellFacts('eval '.repeat(40) + 'rm -rf x'), (e: unknown) => e instanceof PortcullisError && e.code === 'shell_parse_error' && e.details['reason'] === 'too-complex');
  });

  test('statements nested past the limit are refused', () => {
    const deep = '$('.repeat(300) + 'ls' + ')'.repeat(300);
    assert.throws(() => shellFacts(deep), (e: unknown) => e instanceof PortcullisError && e.code === 'shell_parse_error');
    const fine = '$('.repeat(50) + 'rm -rf x' + ')'.repeat(50);
    const facts = shellFacts(fine);
    // 50 command words computed at run time (each level's program is the next $(…)), then rm.
    assert.equal(facts.commands.length, 51);
    assert.equal(facts.commands.filter((c) => c.dynamic).length, 50);
    assert.equal(facts.commands[50]!.program, 'rm');
    assert.equal(facts.commands[50]!.context, 'subst');
  });

  test('random input either parses to facts or fails with shell_parse_error, nothing else', () => {
    const alphabet = fc.constantFrom(...'ab rm-f$(){}[]\'"`\\|&;<>\n#=*?!~,.0123456789cxs'.split(''));
    fc.assert(
      fc.property(fc.string({ unit: alphabet, maxLength: 40 }), (line) => {
        try {
          const facts = shellFacts(line);
          for (const c of facts.commands) {
            assert.ok(c.program === null || typeof c.program === 'string');
            assert.ok(Array.isArray(c.args) && Array.isArray(c.flags) && Array.isArray(c.wrappers));
            if (c.dynamic) assert.equal(c.program, null);
          }
        } catch (e) {
          if (!(e instanceof PortcullisError) || e.code !== 'shell_parse_error') throw e;
        }
      }),
      { numRuns: 400, seed: 42 },
    );
  });

  // Wrappers put spaces inside parentheses: `((…))` and `$((…))` are arithmetic in bash (5.2 runs
  // `((rm -rf x))` as an arithmetic error, not as a command), and the parser agrees.
  test('an rm hidden anywhere in a generated line is found', () => {
    // Prefix wrappers run an argv (they apply to a simple command); structural ones nest lines.
    const prefixes = ['sudo', 'env A=1', 'timeout 3', 'nohup', 'xargs', 'eval', 'nice -n 5', 'command', 'exec', 'doas -u x'];
    const structural = [
      (s: string) => `ls; ${s}`,
      (s: string) => `true && ${s}`,
      (s: string) => `false || ${s} & wait`,
      (s: string) => `echo $( ${s} )`,
      (s: string) => `echo \`${s.replaceAll('\\', '\\\\').replaceAll('`', '\\`')}\``,
      (s: string) => `( ${s} )`,
      (s: string) => `{ ${s}; }`,
      (s: string) => `cat x | ${s}`,
      (s: string) => `if true; then ${s}; fi`,
      (s: string) => `while false; do ${s}; done`,
      (s: string) => `cat <( ${s} )`,
      (s: string) => `f() { ${s}; }`,
      (s: string) => `X=$( ${s} ) y`,
      (s: string) => `sh -c '${s.replaceAll("'", "'\\''")}'`,
    ];
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: prefixes.length - 1 }), { maxLength: 4 }),
        fc.array(fc.integer({ min: 0, max: structural.length - 1 }), { maxLength: 5 }),
        (pre, struct) => {
          let line = 'rm -rf /srv';
          for (const i of pre) line = `${prefixes[i]!} ${line}`;
          for (const i of struct) line = structural[i]!(line);
          let facts;
          try {
            facts = shellFacts(line);
          } catch (e) {
            // Backquotes nested three deep are refused (fail closed), never read wrongly.
            const backquoteLevels = struct.filter((i) => i === 4).length;
            if (backquoteLevels >= 3 && e instanceof PortcullisError && e.code === 'shell_parse_error') return;
            throw e;
          }
          const found = facts.commands.filter((c) => c.program === 'rm');
          assert.ok(found.some((c) => c.flags.includes('r') && c.flags.includes('f') && c.args.includes('/srv')), line);
        },
      ),
      { numRuns: 400, seed: 7 },
    );
  });
});

describe('shellFacts: literal words match what bash itself passes (differential, /bin/bash)', () => {
  const chars = (alphabet: string, max: number) => fc.string({ unit: fc.constantFrom(...alphabet.split('')), minLength: 1, maxLength: max });
  const piece = fc.oneof(
    chars('abz019._/-é', 4),
    chars('ab \\`$"{},*', 5).map((t) => `'${t}'`),
    fc.array(fc.constantFrom('a', 'b', ' ', "'", '\\\\', '\\$', '\\"', '\\`', '\\a', '{', ','), { minLength: 1, maxLength: 5 }).map((p) => `"${p.join('')}"`),
    fc.array(fc.constantFrom('a', ' ', '\\x41', '\\x', '\\t', '\\\\', "\\'", '\\101', '"'), { minLength: 1, maxLength: 4 }).map((p) => `$'${p.join('')}'`),
    fc.constantFrom('a', '$', '`', '"', "'", '\\', ' ', '*', '{', '}', ',', 'n').map((c) => `\\${c}`),
    fc.tuple(chars('abc', 2), chars('xyz', 2)).map(([x, y]) => `{${x},${y}}`),
    // Brace expansions whose elements are quoted or escaped, possibly unbalanced.
    fc
      .array(fc.oneof(chars('ab-', 2), fc.constantFrom('"c,d"', "'}'", '\\,', '\\}', '\\{', '"x y"', '{e,f}', '{}', '{x}', '1..3', 'a..c', '01..3', '5..1..2', '-2..1', 'a..', '..}', "$'\\x41'", '')), { minLength: 1, maxLength: 3 })
      .chain((els) => fc.constantFrom(`{${els.join(',')}}`, `{${els.join(',')}`, `${els.join(',')}}`)),
  );
  const word = fc.array(piece, { minLength: 1, maxLength: 3 }).map((p) => p.join(''));
  const backquote = (text: string) => '`' + text.replaceAll('\\', '\\\\').replaceAll('`', '\\`') + '`';

  test('printf arguments at backquote depth 0, 1 and 2', () => {
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 3 }), fc.integer({ min: 0, max: 2 }), (words, depth) => {
        // mvdan-sh cannot parse $'…' inside backquotes (a parse error: fail closed), tested below.
        fc.pre(depth === 0 || !words.some((w) => w.includes("$'")));
        let text = `printf '<%s>' ${words.join(' ')}`;
        for (let i = 0; i < depth; i++) text = `printf '%s' ${backquote(text)}`;
        const line = `set -f; IFS=; ${text}`;
        const expected = execFileSync('/bin/bash', ['-c', line], { encoding: 'utf8' });
        let facts;
        try {
          facts = shellFacts(line);
        } catch (e) {
          // Two backquotes deep, backslashes are refused (the parser does not follow bash there).
          if (depth >= 2 && e instanceof PortcullisError && e.code === 'shell_parse_error') return;
          throw e;
        }
        const inner = facts.commands.filter((c) => c.program === 'printf' && c.args[0] === '<%s>');
        assert.equal(inner.length, 1, line);
        const args = inner[0]!.args.slice(1);
        if (args.includes(D)) {
          // Allowed only for $'…' bytes that are not UTF-8 (bash passes raw bytes: no string has them).
          assert.ok(expected.includes('\uFFFD'), `dynamic without reason: ${line}`);
        } else {
          assert.equal(args.map((a) => `<${a}>`).join(''), expected, line);
        }
      }),
      { numRuns: 400, seed: 11 },
    );
  });

  test('a command hidden in single quotes inside backquotes is found', () => {
    // bash removes one level of backslashes inside `…` before parsing, also inside '…'.
    check("echo `sh -c 'echo \\`rm -rf /srv\\`'`", [
      { program: 'echo' },
      { program: 'sh', args: ['-c', 'echo `rm -rf /srv`'], context: 'subst' },
      { program: 'echo', wrappers: ['sh -c'], context: 'subst' },
      rmrf('/srv', { wrappers: ['sh -c'], context: 'subst' }),
    ]);
  });
});

describe('shellFacts: every program bash tries to run is in the facts (differential, /bin/bash)', () => {
  // bash runs with an empty PATH: no external program can start, and command_not_found_handle
  // logs each one bash tries to run. Program names carry no slash, so nothing is executed.
  const programs = ['rm', 'r"m"', "'rm'", '\\rm', "$'\\x72m'", '{rm,-rf}', 'r${E}m', 'cat'];
  const structural = [
    (s: string) => `true; ${s}`,
    (s: string) => `true && ${s}`,
    (s: string) => `false || ${s}`,
    (s: string) => `echo $( ${s} )`,
    (s: string) => `echo "$( ${s} )"`,
    (s: string) => `echo \`${s.replaceAll('\\', '\\\\').replaceAll('`', '\\`')}\``,
    (s: string) => `( ${s} )`,
    (s: string) => `{ ${s}; }`,
    (s: string) => `echo x | ${s}`,
    (s: string) => `if true; then ${s}; fi`,
    (s: string) => `while true; do ${s}; break; done`,
    (s: string) => `for i in 1; do ${s}; done`,
    (s: string) => `case x in x) ${s};; esac`,
    (s: string) => `f() { ${s}; }; f`,
    (s: string) => `eval '${s.replaceAll("'", "'\\''")}'`,
    (s: string) => `X=$( ${s} ) true`,
    (s: string) => `echo \${u:-$( ${s} )}`,
    (s: string) => `: <<< "$( ${s} )"`,
    (s: string) => `echo <( ${s} ) > /dev/null`,
    (s: string) => `[[ -n $( ${s} ) ]]`,
    (s: string) => `! ${s}`,
    (s: string) => `time ${s}`,
    (s: string) => `${s} & wait`,
    (s: string) => `cat <<EOF\n$( ${s} )\nEOF`,
    (s: string) => `cat <<'EOF'\n$( ${s} )\nEOF`,
    // bash ends `…` at the backquote inside the quotes, so s runs at the top level: refused.
    (s: string) => `echo \`echo 'x\`; ${s}; \`'\``,
  ];

  test('structural compositions', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-shell-facts-'));
    let run = 0;
    const tried = (line: string): string[] => {
      // A log per run: a process substitution may still be writing after bash exits.
      const log = join(dir, `log-${run++}`);
      const script = `command_not_found_handle() { printf '%s\\n' "$1" >> ${JSON.stringify(log)}; return 127; }\n${line}\n`;
      try {
        execFileSync('/bin/bash', ['-c', script], { cwd: dir, env: { PATH: '/nonexistent' }, stdio: 'ignore', timeout: 5000 });
      } catch {
        // a non-zero exit (127): only the log matters
      }
      try {
        return readFileSync(log, 'utf8').split('\n').filter((l) => l !== '');
      } catch {
        return [];
      }
    };
    let refusals = 0;
    try {
      // The harness itself: bash reports what it could not run.
      assert.deepEqual(tried('rm -rf /srv; echo `cat x`'), ['rm', 'cat']);
      fc.assert(
        fc.property(fc.integer({ min: 0, max: programs.length - 1 }), fc.array(fc.integer({ min: 0, max: structural.length - 1 }), { maxLength: 4 }), (p, path) => {
          let line = `${programs[p]!} -rf /srv`;
          for (const i of path) line = structural[i]!(line);
          let facts;
          try {
            facts = shellFacts(line);
          } catch (e) {
            // A refusal fails closed (backquotes three deep, $'…' inside backquotes, `! !`, ...):
            // allowed, but it must stay rare.
            if (e instanceof PortcullisError && e.code === 'shell_parse_error') {
              refusals++;
              return;
            }
            throw e;
          }
          const known = new Set(facts.commands.map((c) => c.program));
          const anyDynamic = facts.commands.some((c) => c.dynamic);
          for (const t of tried(line)) assert.ok(known.has(t) || anyDynamic, `bash tried ${t} in ${JSON.stringify(line)}; facts: ${[...known].join(',')}`);
        }),
        { numRuns: 300, seed: 3 },
      );
      assert.ok(refusals < 75, `${refusals} of 300 generated lines refused`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('shellFactsCached', () => {
  test('returns the same facts as shellFacts, frozen, and the same object on a hit', () => {
    clearShellFactsCache();
    const line = 'ls -la; sudo rm -rf /srv | tee log';
    const a = shellFactsCached(line);
    const b = shellFactsCached(line);
    assert.equal(a, b);
    assert.deepEqual(a, shellFacts(line));
    assert.ok(Object.isFrozen(a) && Object.isFrozen(a.commands) && Object.isFrozen(a.commands[0]!.args));
    assert.throws(() => {
      (a.commands as ShellCommand[]).push(a.commands[0]!);
    }, TypeError);
  });

  test('parse errors are cached and rethrown as fresh errors with the same code and position', () => {
    clearShellFactsCache();
    const errs: PortcullisError[] = [];
    for (let i = 0; i < 2; i++) {
      try {
        shellFactsCached("echo 'x");
      } catch (e) {
        assert.ok(e instanceof PortcullisError);
        errs.push(e);
      }
    }
    assert.equal(errs.length, 2);
    assert.notEqual(errs[0], errs[1]);
    assert.equal(errs[1]!.code, 'shell_parse_error');
    assert.equal(errs[1]!.message, errs[0]!.message);
    assert.deepEqual(errs[1]!.details, errs[0]!.details);
  });

  test('LruCache evicts the least recently used entry', () => {
    const c = new LruCache<string, number>(2);
    c.set('a', 1);
    c.set('b', 2);
    assert.equal(c.get('a'), 1); // a is now the most recent
    c.set('c', 3);
    assert.equal(c.get('b'), undefined);
    assert.equal(c.get('a'), 1);
    assert.equal(c.get('c'), 3);
    assert.equal(c.size, 2);
    assert.throws(() => new LruCache(0), RangeError);
  });
});

describe('helpers', () => {
  test('parseFlags', () => {
    assert.deepEqual(parseFlags(['-rf', 'x', '--force=yes', '-r', '--', '-z']), ['r', 'f', 'force']);
    assert.deepEqual(parseFlags(['-', 'x', D, '--']), []);
  });

  test('ANSI-C quoting is decoded as bash does', () => {
    assert.equal(decodeAnsiC('\\x72\\155\\u0066'), 'rmf');
    assert.equal(decodeAnsiC('a\\tb\\nc\\\\d\\\'e'), "a\tb\nc\\d'e");
    assert.equal(decodeAnsiC('ab\\0cd'), 'ab');
    assert.equal(decodeAnsiC('\\q\\x'), '\\q\\x');
    assert.equal(decodeAnsiC('\\cA'), '\u0001');
    assert.equal(decodeAnsiC('\\xc3\\xa9\\u00e9'), 'éé');
    assert.equal(decodeAnsiC('\\xaa'), null, 'not UTF-8: no string can stand for it');
  });
});
