// `portcullis console [--data-dir DIR | --socket PATH]`: the operator console. A separate process
// from the bastion that talks only to its control socket (src/control); see tui/app.ts for the
// screens and the keymap.
import { controlSocketPath } from '../src/cli/ops.js';
import { EXIT, UsageError } from '../src/cli/util.js';
import { App } from './app.js';
import { ApprovalsView } from './views/approvals.js';
import { AuditView } from './views/audit.js';
import { RecordingsView } from './views/recordings.js';
import { SessionsView } from './views/sessions.js';

export async function consoleCommand(o: { dataDir?: string; socket?: string }): Promise<number> {
  if (!process.stdout.isTTY || !process.stdin.isTTY) throw new UsageError('the console needs a terminal (for scripts: portcullis sessions | approvals | approve | deny | kill)');
  const app = new App(controlSocketPath(o), {
    sessions: (a) => new SessionsView(a),
    approvals: (a) => new ApprovalsView(a),
    recordings: (a) => new RecordingsView(a),
    audit: (a) => new AuditView(a),
  });
  const code = await app.run('sessions');
  return code === 0 ? EXIT.OK : EXIT.FAILED;
}
