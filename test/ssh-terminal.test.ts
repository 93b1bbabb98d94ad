// Interactive SSH sessions through the bastion with the real OpenSSH client in a terminal
// (node-pty drives `ssh -tt` the way a person or an agent types): Enter is held until the line on
// the screen is decided; line editing, history recall, tab completion, pastes, continuation lines,
// full-screen programs, password prompts, holds, masking, window changes and recordings.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { startSshd, type Sshd } from './harness/sshd.js';
import { asciinema, startSshBastion, type SshBastion, type Terminal } from './harness/sshbastion.js';

interface Case {
  name: string;
  command?: string;
  expect: { effect: 'allow' | 'deny' | 'review'; rule?: string };
}
const CASES = (YAML.parse(fs.readFileSync('examples/policies/tests/ssh.yaml', 'utf8')) as { tests: Case[] }).tests.filter((c) => c.command !== undefined);

const PROMPT = /nobody@sandbox:[^\n]*\$ $/;
const UP = '\x1b[A';
const LEFT = '\x1b[D';
const DEL = '\x1b[3~';

let sshd: Sshd;
let b: SshBastion;
let sandbox: string;

before(async () => {
  sshd = await startSshd();
  b = await startSshBastion({ sshd, approvalTimeoutMs: 15_000 });
  sandbox = path.join(b.dataDir, 'sandbox');
});

after(async () => {
  await b?.close();
  await sshd?.stop();
});

async function open(login = 'demo-agent+sandbox', o: { command?: string; prompt?: RegExp } = {}): Promise<Terminal> {
  const t = b.terminal(login, o.command ? { command: o.command } : {});
  await t.waitFor(o.prompt ?? PROMPT, 15_000);
  return t;
}

/** Type a line (plus Enter) and wait for the next prompt; returns the text shown after it was typed. */
async function line(t: Terminal, keys: string, o: { prompt?: RegExp; timeoutMs?: number } = {}): Promise<string> {
  const from = t.mark();
  t.write(keys);
  return t.waitFor(new RegExp(`\\n[^\\n]*(${(o.prompt ?? PROMPT).source})`), o.timeoutMs ?? 10_000, from);
}

async function close(t: Terminal): Promise<void> {
  t.write('\x15exit\r');
  const code = await Promise.race([t.exited, new Promise<number>((r) => setTimeout(() => r(-1), 5000))]);
  if (code === -1) t.kill();
}

function autoDecide(state: 'approved' | 'denied'): () => void {
  const on = (rec: { id: string }) => void b.core.approvals.decide(rec.id, state, 'demo-oncall', 'test operator').catch(() => undefined);
  b.core.approvals.on('created', on);
  return () => b.core.approvals.off('created', on);
}

function cast(t: Terminal): string {
  // the most recent recording that holds this terminal's output
  const marker = /nobody@sandbox/;
  const files = b.recordings().map((f) => ({ f, text: fs.readFileSync(f, 'utf8'), m: fs.statSync(f).mtimeMs }));
  files.sort((x, y) => y.m - x.m);
  void t;
  return files.find((x) => marker.test(x.text))?.text ?? '';
}

describe('interactive shell: Enter is held until the line is decided', () => {
  test('every reference-policy shell rule, typed at the prompt', async () => {
    const t = await open();
    const stop = autoDecide('denied');
    try {
      for (const c of CASES) {
        if (c.name === 'unparseable line is denied') continue; // at a prompt it is a continuation (tested below)
        const shown = await line(t, c.command + '\r');
        const blocked = /portcullis: (blocked by|approval denied)/.test(shown);
        if (c.expect.effect === 'allow') assert.ok(!blocked, `${c.name}: ${shown}`);
        else {
          assert.ok(blocked, `${c.name}: ${shown}`);
          if (c.expect.rule) assert.match(shown, new RegExp(`(blocked by |for |:)${c.expect.rule}[: ]`), c.name);
          if (c.expect.effect === 'review') assert.match(shown, /held for approval \w+/, c.name);
        }
      }
    } finally {
      stop();
      await close(t);
    }
  });

  test('ls;rm -rf, $( ), backticks and bash -c never run, whatever else is on the line', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    fs.writeFileSync(path.join(sandbox, 'x', 'f'), 'keep');
    const t = await open();
    try {
      for (const cmd of ['ls;rm -rf x', 'echo $(rm -rf x)', 'echo `rm -rf x`', "bash -c 'rm -rf x'", 'true && rm -fr x', 'ls | xargs rm -rf']) {
        const shown = await line(t, cmd + '\r');
        assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/, cmd);
        assert.ok(fs.existsSync(path.join(sandbox, 'x', 'f')), `${cmd} must not have run`);
      }
    } finally {
      await close(t);
    }
  });

  test('a paste of three lines where the second is denied runs none of them', async () => {
    const t = await open();
    try {
      const shown = await line(t, 'touch p1\rrm -rf x\rtouch p3\r');
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      assert.match(shown, /nothing of the pasted 3 lines was run/);
      await line(t, 'true\r');
      assert.ok(!fs.existsSync(path.join(sandbox, 'p1')) && !fs.existsSync(path.join(sandbox, 'p3')));
      // a paste of allowed lines runs, line by line
      t.write('touch p4\rtouch p5\rtouch p6\r');
      const t0 = Date.now();
      while (!fs.existsSync(path.join(sandbox, 'p6')) && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
      assert.ok(['p4', 'p5', 'p6'].every((f) => fs.existsSync(path.join(sandbox, f))));
    } finally {
      await close(t);
    }
  });

  test('history recall: a recalled line is decided as it stands on the screen', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    const t = await open();
    try {
      await line(t, 'echo rm -rf x\r');
      // up, start of line, delete "echo " → "rm -rf x"
      let shown = await line(t, UP + '\x01' + DEL.repeat(5) + '\r');
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm: rm with -r\/-f: rm -rf x/);
      // a denied line put into the history, recalled and entered as is
      await line(t, "history -s 'rm -rf x'\r");
      shown = await line(t, UP + '\r');
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      assert.ok(fs.existsSync(path.join(sandbox, 'x')));
    } finally {
      await close(t);
    }
  });

  test('a denied line edited with arrows and backspace into an allowed one runs as edited', async () => {
    const t = await open();
    try {
      await line(t, 'touch victim\r');
      assert.ok(fs.existsSync(path.join(sandbox, 'victim')));
      await t.type('rm -rf victim');
      // cursor back over " victim", erase "-rf": the line is now "rm  victim"
      const shown = await line(t, LEFT.repeat(7) + '\x7f\x7f\x7f' + '\r');
      assert.doesNotMatch(shown, /portcullis: blocked/);
      assert.ok(!fs.existsSync(path.join(sandbox, 'victim')), 'the edited rm ran');
      const m = /"m", "allow \S+:commands: (rm {2}victim)"/.exec(cast(t));
      assert.ok(m, 'the decided line is the edited one');
    } finally {
      await close(t);
    }
  });

  test('output printed into the line being typed (a background job) does not change what is decided', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    const t = await open();
    try {
      await line(t, "(sleep 0.6; printf 'echo \\033]133;B\\007') &\r");
      t.write('r');
      await t.waitFor(/recho $/, 5000, t.mark() - 1);
      const shown = await line(t, 'm -rf x\r');
      // on the screen: "recho m -rf x" (allowed); typed: "rm -rf x", which bash runs: denied
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      assert.ok(fs.existsSync(path.join(sandbox, 'x')));
    } finally {
      await close(t);
    }
  });

  test('a refused line is abandoned whatever the editing mode (vi mode, cursor mid-line, paste mode)', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    const t = await open();
    try {
      await line(t, 'set -o vi\r');
      // vi mode, cursor moved back to the middle: Ctrl-U alone would leave "rm -rf x" behind
      await t.type('true;rm -rf x');
      let shown = await line(t, '\x1b' + 'F;' + '\r');
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      shown = await line(t, 'echo after\r');
      assert.match(shown, /\nafter\n/);
      await line(t, 'set -o emacs\r');
      // a bracketed-paste start split over two reads, far apart: the shell is in paste mode
      t.write('\x1b[20');
      await new Promise((r) => setTimeout(r, 120));
      t.write('0~ls\rrm -rf x');
      await new Promise((r) => setTimeout(r, 300));
      shown = await line(t, '\x1b[201~\r');
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      assert.ok(fs.existsSync(path.join(sandbox, 'x')));
    } finally {
      await close(t);
    }
  });

  test('a line typed blind (echo off, a shell that does not echo) is still decided', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    const t = await open();
    try {
      const from = t.mark();
      t.write("stty -echo; PS1='blind$ ' dash\r");
      await t.waitFor(/blind\$ $/, 5000, from);
      const shown = await line(t, 'rm -rf x\r', { prompt: /blind\$ $/ });
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      assert.ok(fs.existsSync(path.join(sandbox, 'x')));
      t.write('exit\r');
      await t.waitFor(PROMPT, 5000, from);
      await line(t, 'stty echo\r');
    } finally {
      await close(t);
    }
  });

  test('a target where a refused line cannot be cancelled (no interrupts) is closed, fail closed', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    const t = await open();
    try {
      const from = t.mark();
      t.write('stty raw -isig; cat\r');
      await new Promise((r) => setTimeout(r, 500));
      t.write('rm -rf x\r');
      await t.waitFor(/could not be cancelled at the target/, 10_000, from);
      const code = await Promise.race([t.exited, new Promise<number>((r) => setTimeout(() => r(-1), 10_000))]);
      assert.equal(code, 255);
      assert.ok(fs.existsSync(path.join(sandbox, 'x')));
    } finally {
      t.kill();
    }
  });

  test('a key rebound to run the line (bind … accept-line) ends the session', async () => {
    const t = await open();
    try {
      await line(t, `bind '"\\C-t": accept-line'\r`);
      const from = t.mark();
      t.write('echo unheld-run\x14');
      await t.waitFor(/not entered with Enter/, 10_000, from);
      const code = await Promise.race([t.exited, new Promise<number>((r) => setTimeout(() => r(-1), 10_000))]);
      assert.equal(code, 255);
    } finally {
      t.kill();
    }
  });

  test('tab completion lands in the decided line', async () => {
    fs.writeFileSync(path.join(sandbox, 'longname-for-completion'), 'x');
    const t = await open();
    try {
      const shown = await line(t, 'rm -rf longname-f\t\r');
      assert.match(shown, /blocked by \S+: rm with -r\/-f: rm -rf longname-for-completion/);
      assert.ok(fs.existsSync(path.join(sandbox, 'longname-for-completion')));
    } finally {
      await close(t);
    }
  });

  test('continuation lines are decided together once complete', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    const t = await open();
    try {
      let from = t.mark();
      t.write("echo 'first\r");
      await t.waitFor(/\n> $/, 5000, from);
      let shown = await line(t, "second'\r");
      assert.match(shown, /first\nsecond/);
      from = t.mark();
      t.write('for i in 1; do\r');
      await t.waitFor(/\n> $/, 5000, from);
      from = t.mark();
      t.write('rm -rf x\r');
      await t.waitFor(/\n> $/, 5000, from);
      shown = await line(t, 'done\r');
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      assert.ok(fs.existsSync(path.join(sandbox, 'x')));
    } finally {
      await close(t);
    }
  });

  test('full-screen programs get their keys; nothing there is a command line', async () => {
    const t = await open();
    try {
      const from = t.mark();
      t.write('vim -u NONE -n -i NONE notes.txt\r');
      await t.waitFor(/notes\.txt/, 10_000, from);
      await new Promise((r) => setTimeout(r, 300));
      t.write('irm -rf x\x1b');
      await new Promise((r) => setTimeout(r, 200));
      const shown = await line(t, ':wq\r');
      assert.doesNotMatch(shown, /portcullis: blocked/);
      assert.equal(fs.readFileSync(path.join(sandbox, 'notes.txt'), 'utf8'), 'rm -rf x\n');
      const c = cast(t);
      const typed = c
        .split('\n')
        .filter((l) => l.includes('"i"'))
        .map((l) => (JSON.parse(l) as [number, string, string])[2])
        .join('');
      assert.ok(typed.includes('irm -rf x\x1b:wq'), 'the keys are recorded');
      assert.doesNotMatch(c, /"m", "deny[^"]*rm -rf x/);
    } finally {
      await close(t);
    }
  });

  test('a password typed with echo off is neither decided nor recorded', async () => {
    const t = await open();
    try {
      const from = t.mark();
      t.write("read -s -p 'Code: ' pw; echo; echo \"length ${#pw}\"\r");
      await t.waitFor(/Code: $/, 5000, from);
      const shown = await line(t, 'hunter2-secret\r');
      assert.match(shown, /length 14/);
      const c = cast(t);
      assert.doesNotMatch(c, /hunter2/);
      assert.match(c, /"m", "input hidden \(echo off\)"/);
    } finally {
      await close(t);
    }
  });

  test('review: held inline until approved; Ctrl-C abandons a hold', async () => {
    const t = await open();
    try {
      let stop = autoDecide('approved');
      let shown = await line(t, 'sudo id\r');
      stop();
      assert.match(shown, /portcullis: held for approval \w+ \(\S+:sudo-needs-approval\)/);
      assert.match(shown, /sudo: command not found/);
      const from = t.mark();
      t.write('sudo whoami\r');
      const held = await t.waitFor(/held for approval (\w+)/, 5000, from);
      const id = /held for approval (\w+)/.exec(held)![1]!;
      shown = await line(t, '\x03');
      assert.match(shown, new RegExp(`portcullis: hold abandoned: approval ${id} .* stays pending`));
      const rec = await b.store.approvals.get(id);
      assert.equal(rec?.state, 'pending', 'bound to the command: a retry once approved passes');
      stop = () => undefined;
    } finally {
      await close(t);
    }
  });

  test('output is masked before the agent and the recording see it; window changes are recorded', async () => {
    const t = await open();
    try {
      const shown = await line(t, "printf 'card %s\\n' '4111 1111 1111 1111'\r");
      assert.match(shown, /card /);
      assert.doesNotMatch(t.raw, /4111 1111 1111 1111/);
      t.resize(90, 20);
      await new Promise((r) => setTimeout(r, 200));
      const size = await line(t, 'stty size\r');
      assert.match(size, /20 90/);
      await close(t);
      const c = cast(t);
      assert.doesNotMatch(c, /4111 ?1111 ?1111 ?1111/);
      assert.match(c, /"r", "90x20"/);
      assert.match(c, /"m", "allow \S+:commands: stty size"/);
      const files = b.recordings();
      for (const f of files) {
        const p = await asciinema(['play', '-s', '100', '-i', '0.05', f]);
        assert.equal(p.code, 0, `${f}: ${p.out.slice(-500)}`);
      }
    } finally {
      t.kill();
    }
  });

  test('an exec that starts a shell is held to the same rules (terminal and script)', async () => {
    fs.mkdirSync(path.join(sandbox, 'x'), { recursive: true });
    const t = await open('demo-agent+sandbox', { command: 'bash --norc', prompt: /\$ $/ });
    try {
      const shown = await line(t, 'rm -rf x\r', { prompt: /\$ $/ });
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
    } finally {
      await close(t);
    }
    const r = await b.ssh('demo-agent+sandbox', 'bash', { input: 'echo one\nrm -rf x\necho two\n' });
    assert.equal(r.code, 126);
    assert.equal(r.stdout, 'one\n');
    assert.match(r.stderr, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
    const s = await b.ssh('demo-agent+sandbox', null, { input: 'echo one\nfor i in 1 2; do\n  echo $i\ndone\n' });
    assert.equal(s.code, 0, s.stderr);
    assert.equal(s.stdout, 'one\n1\n2\n');
    assert.ok(fs.existsSync(path.join(sandbox, 'x')));
  });
});

describe('interactive shell on a remote target (no prompt marks)', () => {
  test('lines are read off the screen and decided', async () => {
    const prompt = /portcullis-test@[^\n]*\$ $/;
    const t = await open('demo-agent+web', { prompt });
    try {
      let shown = await line(t, 'echo remote-$((6*7))\r', { prompt });
      assert.match(shown, /remote-42/);
      shown = await line(t, 'ls; rm -rf /tmp/never\r', { prompt });
      assert.match(shown, /portcullis: blocked by \S+:no-recursive-or-forced-rm/);
      await line(t, 'echo rm -rf y\r', { prompt });
      shown = await line(t, UP + '\x01' + DEL.repeat(5) + '\r', { prompt });
      assert.match(shown, /portcullis: blocked by \S+: rm with -r\/-f: rm -rf y/);
      shown = await line(t, 'touch /tmp/pc-a1\rrm -rf /tmp/pc-never\rtouch /tmp/pc-a3\r', { prompt });
      assert.match(shown, /nothing of the pasted 3 lines was run/);
    } finally {
      await close(t);
    }
  });
});
