// Replay of a recording inside the console: a terminal recording plays in a headless xterm with
// pause (space), seek (←/→ 5 s, [ ] 30 s, Home restart), speed (+/-); a PostgreSQL transcript is
// shown as scrollable text.
import blessed from 'blessed';
import type { Widgets } from 'blessed';
import type { RecordingInfo } from '../../src/control/protocol.js';
import { Player } from '../../recordings/player.js';
import { parseCast } from '../../recordings/reader.js';
import { parseTranscript, renderTranscriptText } from '../../recordings/transcript.js';
import type { App, Key, View } from '../app.js';
import { HeadlessTerm } from '../term.js';
import { escapeTags, fit } from '../text.js';

function mmss(s: number): string {
  const t = Math.floor(s);
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}`;
}

export class ReplayView implements View {
  readonly title: string;
  readonly hints: string;
  readonly help: [string, string][];
  private box: Widgets.BoxElement | null = null;
  private bar: Widgets.BoxElement | null = null;
  private term: HeadlessTerm | null = null;
  private player: Player | null = null;
  private text: string[] = [];
  private scroll = 0;
  private error = '';
  private loaded = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly app: App,
    private readonly rec: RecordingInfo,
  ) {
    this.title = `replay ${rec.session.slice(0, 8)}`;
    this.hints = rec.kind === 'cast' ? 'space pause  ←/→ seek  +/- speed' : '↑/↓ scroll';
    this.help =
      rec.kind === 'cast'
        ? [
            ['space', 'pause / play'],
            ['← / →', 'seek 5 s back / forward'],
            ['[ / ]', 'seek 30 s back / forward'],
            ['Home / 0', 'restart'],
            ['+ / -', 'faster / slower (×2, ÷2)'],
          ]
        : [['↑ ↓ PgUp PgDn', 'scroll the transcript']];
  }

  mount(body: Widgets.BoxElement): void {
    this.box = blessed.box({ parent: body, top: 0, left: 0, width: '100%', height: '100%-1', border: { type: 'line' }, tags: true, style: { border: { fg: 'cyan' } } });
    this.bar = blessed.box({ parent: body, bottom: 0, left: 0, width: '100%', height: 1, tags: true });
  }

  unmount(): void {
    this.player?.stop();
    this.box?.destroy();
    this.bar?.destroy();
    this.box = this.bar = null;
  }

  up(): void {
    if (this.loaded) return;
    void this.load();
  }

  private async load(): Promise<void> {
    try {
      const r = await this.app.conn.call<{ kind: string; text: string; file: string }>('recording.get', { session: this.rec.session, kind: this.rec.kind });
      this.loaded = true;
      if (r.kind === 'cast') {
        const { header, events } = parseCast(r.text, r.file);
        const term = new HeadlessTerm(header.width, header.height);
        this.term = term;
        // Writes are queued in order so that a seek's reset never overtakes earlier output.
        const write = (d: string) => (this.chain = this.chain.then(() => term.write(d)).then(() => this.app.render()));
        this.player = new Player(
          events,
          {
            output: write,
            resize: (c, rr) => (this.chain = this.chain.then(() => term.resize(c, rr))),
            reset: () => (this.chain = this.chain.then(() => term.reset(header.width, header.height))),
            end: () => this.app.render(),
          },
          { ...(header.idle_time_limit ? { idleTimeLimit: header.idle_time_limit } : { idleTimeLimit: 2 }) },
        );
        this.player.play();
      } else {
        this.text = renderTranscriptText(parseTranscript(r.text, r.file)).split('\n');
      }
    } catch (e) {
      this.error = (e as Error).message;
    }
    this.app.render();
  }

  key(ch: string | undefined, key: Key): boolean {
    const p = this.player;
    if (p) {
      if (ch === ' ') p.toggle();
      else if (key.name === 'right') p.seek(p.position() + 5);
      else if (key.name === 'left') p.seek(p.position() - 5);
      else if (ch === ']') p.seek(p.position() + 30);
      else if (ch === '[') p.seek(p.position() - 30);
      else if (key.name === 'home' || ch === '0') {
        p.seek(0);
        p.play();
      } else if (ch === '+' || ch === '=') p.setSpeed(p.speed * 2);
      else if (ch === '-') p.setSpeed(p.speed / 2);
      else return false;
      return true;
    }
    const h = this.box ? (this.box.height as number) - 2 : 10;
    if (key.name === 'up') this.scroll--;
    else if (key.name === 'down') this.scroll++;
    else if (key.name === 'pageup') this.scroll -= h;
    else if (key.name === 'pagedown') this.scroll += h;
    else if (key.name === 'home') this.scroll = 0;
    else if (key.name === 'end') this.scroll = Infinity;
    else return false;
    this.scroll = Math.max(0, Math.min(this.scroll, Math.max(0, this.text.length - h)));
    return true;
  }

  render(): void {
    if (!this.box || !this.bar) return;
    const w = (this.box.width as number) - 3; // see Table.innerWidth
    const h = (this.box.height as number) - 2;
    if (this.error) {
      this.box.setContent(`{red-fg}${escapeTags(this.error)}{/red-fg}`);
      return;
    }
    if (!this.loaded) {
      this.box.setContent('loading…');
      return;
    }
    if (this.term && this.player) {
      const { lines, cropped } = this.term.render(w, h, false);
      this.box.setLabel(` ${this.rec.session.slice(0, 8)} ${this.term.cols}x${this.term.rows}${cropped ? ' (cropped)' : ''} `);
      this.box.setContent(lines.join('\n'));
      const p = this.player;
      const state = p.ended ? 'ended' : p.paused ? 'paused' : 'playing';
      const frac = p.duration > 0 ? p.position() / p.duration : 1;
      const info = ` ${state}  ${mmss(p.position())}/${mmss(p.duration)}  speed ${p.speed}x `;
      const barW = Math.max(0, (this.bar.width as number) - info.length - 2);
      const filled = Math.round(frac * barW);
      this.bar.setContent(`{bold}${escapeTags(info)}{/bold}[${'#'.repeat(filled)}${'-'.repeat(barW - filled)}]`);
    } else {
      this.box.setLabel(` transcript ${this.rec.session.slice(0, 8)} `);
      this.box.setContent(this.text.slice(this.scroll, this.scroll + h).map((l) => escapeTags(fit(l, w))).join('\n'));
      this.bar.setContent(` lines ${this.scroll + 1}-${Math.min(this.text.length, this.scroll + h)} of ${this.text.length}`);
    }
  }
}
