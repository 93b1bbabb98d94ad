// `portcullis replay SESSION` (terminal playback of an asciicast recording; PostgreSQL transcripts
// printed as text) and `portcullis export SESSION --html FILE` (self-contained HTML with
// asciinema-player inlined; transcripts as HTML). Both read `<data-dir>/recordings/` directly.
import { writeFileSync } from 'node:fs';
import { exportHtml } from '../../recordings/export-html.js';
import { findSession, transcriptOf, type SessionRecordings } from '../../recordings/library.js';
import { Player } from '../../recordings/player.js';
import { loadCastParts, readCastParts } from '../../recordings/reader.js';
import { readTranscriptFile, renderTranscriptText, type TranscriptEntry } from '../../recordings/transcript.js';
import { readAudit } from '../core/audit-read.js';
import { EXIT, UsageError, dataDirFrom } from './util.js';

function num(v: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${flag} must be a number from ${min} to ${max}, got "${v}"`);
  return n;
}

function fmt(sec: number): string {
  const s = Math.floor(sec);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export interface ReplayOptions {
  dataDir?: string;
  speed?: string;
  idleTimeLimit?: string;
}

export async function replayCommand(session: string | undefined, o: ReplayOptions): Promise<number> {
  if (!session) throw new UsageError('the SESSION id (or a unique prefix, or a .cast file) is required');
  const speed = num(o.speed, 'speed', 0.05, 1000) ?? 1;
  const idle = num(o.idleTimeLimit, 'idle-time-limit', 0.01, 86_400);
  const found = findSession(dataDirFrom(o.dataDir), session);
  if (found.cast) await playCast(found.castParts ?? [found.cast], speed, idle);
  const tr = transcriptOf(found);
  if (tr) process.stdout.write(renderTranscriptText(readTranscriptFile(tr), { color: process.stdout.isTTY === true }));
  return EXIT.OK;
}

async function playCast(parts: string[], speed: number, idleOpt: number | undefined): Promise<void> {
  const file = parts.length > 1 ? `${parts[0]} (+${parts.length - 1} parts)` : parts[0]!;
  const { header, events } = await loadCastParts(parts);
  const idle = idleOpt ?? header.idle_time_limit;
  const out = process.stdout;
  const tty = process.stdin.isTTY === true && out.isTTY === true;
  await new Promise<void>((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      player.stop();
      if (tty) {
        process.stdin.setRawMode(false);
        process.stdin.pause();
        process.stdin.off('data', onKey);
        process.stderr.write(`\r\n[portcullis replay: ${file}, ${fmt(player.duration)}]\r\n`);
      }
      process.off('SIGINT', finish);
      resolve();
    };
    const player = new Player(
      events,
      {
        output: (d) => out.write(d),
        // A backward seek replays from the start on a cleared screen.
        reset: () => out.write('\x1bc'),
        end: () => finish(),
      },
      { speed, ...(idle !== undefined ? { idleTimeLimit: idle } : {}) },
    );
    // Keys on a terminal: space pause/resume, ←/→ seek 5 s, +/- speed, q or Ctrl-C quit.
    const onKey = (k: Buffer) => {
      const s = k.toString('utf8');
      if (s === 'q' || s === '\x03') finish();
      else if (s === ' ') player.toggle();
      else if (s === '\x1b[C') player.seek(player.position() + 5);
      else if (s === '\x1b[D') player.seek(player.position() - 5);
      else if (s === '+' || s === '=') player.setSpeed(player.speed * 2);
      else if (s === '-') player.setSpeed(player.speed / 2);
    };
    if (tty) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on('data', onKey);
    }
    process.once('SIGINT', finish);
    player.play();
  });
}

/** Identity, target and times of a session from its audit events (best effort). */
async function sessionFacts(dataDir: string, session: string): Promise<[string, string][]> {
  const facts: [string, string][] = [['session', session]];
  try {
    for await (const e of readAudit(dataDir, { session })) {
      if (e.type === 'session.open') {
        facts.push(['identity', `${e.identity?.subject ?? '?'}${e.identity?.groups?.length ? ` (${e.identity.groups.join(', ')})` : ''}`], ['target', `${e.target ?? '?'} (${e.protocol ?? '?'})`], ['opened', e.time]);
        const remote = e.data?.remote;
        if (typeof remote === 'string') facts.push(['from', remote]);
      } else if (e.type === 'session.close') {
        facts.push(['closed', `${e.time} (${String(e.data?.reason ?? '')})`]);
        const r = e.data?.recording as { sha256?: string } | undefined;
        if (r?.sha256) facts.push(['recording SHA-256', `${r.sha256} (audit seq ${e.seq})`]);
        break;
      }
    }
  } catch {
    // no audit log here: the recording alone
  }
  return facts;
}

export interface ExportOptions {
  dataDir?: string;
  html?: string;
  idleTimeLimit?: string;
  speed?: string;
}

export async function exportCommand(session: string | undefined, o: ExportOptions): Promise<number> {
  if (!session) throw new UsageError('the SESSION id (or a unique prefix, or a .cast file) is required');
  if (!o.html) throw new UsageError('--html FILE is required (- for stdout)');
  const idle = num(o.idleTimeLimit, 'idle-time-limit', 0.01, 86_400);
  const speed = num(o.speed, 'speed', 0.05, 1000);
  const dataDir = dataDirFrom(o.dataDir);
  const found: SessionRecordings = findSession(dataDir, session);
  let cast: string | undefined;
  if (found.cast) {
    const parts = found.castParts ?? [found.cast];
    await loadCastParts(parts); // refuse a damaged recording, naming file:line
    cast = readCastParts(parts); // a rotated recording's parts, as one
  }
  const tr = transcriptOf(found);
  const transcript: TranscriptEntry[] | undefined = tr ? readTranscriptFile(tr) : undefined;
  const html = exportHtml({
    title: `Portcullis session ${found.session}`,
    meta: await sessionFacts(dataDir, found.session),
    ...(cast !== undefined ? { cast } : {}),
    ...(transcript ? { transcript } : {}),
    player: { ...(idle !== undefined ? { idleTimeLimit: idle } : {}), ...(speed !== undefined ? { speed } : {}) },
  });
  if (o.html === '-') process.stdout.write(html);
  else {
    writeFileSync(o.html, html, { mode: 0o640 });
    process.stderr.write(`wrote ${o.html} (${Math.round(html.length / 1024)} KiB, self-contained: ${[found.cast ? 'terminal recording with asciinema-player' : '', found.pg ? 'PostgreSQL transcript' : found.kube ? 'Kubernetes transcript' : ''].filter(Boolean).join(' + ')})\n`);
  }
  return EXIT.OK;
}
