// Playback of an asciicast recording against a clock: speed, idle-time cap, pause, seek. Used by
// `portcullis replay` (writes to the terminal) and the console's recordings screen (feeds a
// headless terminal). Positions are seconds of the recording after the idle-time cap.
import type { CastEvent } from './reader.js';

export interface Frame {
  /** Seconds on the capped timeline. */
  t: number;
  code: CastEvent['code'];
  data: string;
}

/** The events on a timeline whose pauses are capped at `idleTimeLimit` seconds (if given). */
export function timeline(events: readonly CastEvent[], idleTimeLimit?: number): Frame[] {
  const out: Frame[] = [];
  let last = 0;
  let t = 0;
  for (const e of events) {
    let gap = e.time - last;
    last = e.time;
    if (idleTimeLimit !== undefined && idleTimeLimit > 0 && gap > idleTimeLimit) gap = idleTimeLimit;
    t += Math.max(0, gap);
    out.push({ t: Math.round(t * 1e6) / 1e6, code: e.code, data: e.data });
  }
  return out;
}

export interface PlayerSink {
  output(data: string): void;
  resize?(cols: number, rows: number): void;
  marker?(label: string): void;
  /** Before a backward seek re-plays from the start: clear the screen. */
  reset?(): void;
  end?(): void;
}

export interface PlayerOptions {
  speed?: number;
  idleTimeLimit?: number;
  /** Clock in ms (tests). */
  now?: () => number;
}

export class Player {
  readonly frames: Frame[];
  readonly duration: number;
  private next = 0;
  private pos = 0;
  private wallAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private playing = false;
  private finished = false;
  private speedValue: number;
  private readonly now: () => number;

  constructor(
    events: readonly CastEvent[],
    private readonly sink: PlayerSink,
    opts: PlayerOptions = {},
  ) {
    this.frames = timeline(events, opts.idleTimeLimit);
    this.duration = this.frames.length ? this.frames[this.frames.length - 1]!.t : 0;
    this.speedValue = clampSpeed(opts.speed ?? 1);
    this.now = opts.now ?? (() => performance.now());
  }

  get paused(): boolean {
    return !this.playing;
  }

  get ended(): boolean {
    return this.finished;
  }

  get speed(): number {
    return this.speedValue;
  }

  /** Current position (seconds on the capped timeline). */
  position(): number {
    if (!this.playing) return this.pos;
    return Math.min(this.duration, this.pos + ((this.now() - this.wallAt) / 1000) * this.speedValue);
  }

  play(): void {
    if (this.playing) return;
    if (this.finished) this.seek(0);
    this.playing = true;
    this.wallAt = this.now();
    this.tick();
  }

  pause(): void {
    if (!this.playing) return;
    this.pos = this.position();
    this.playing = false;
    this.clear();
  }

  toggle(): void {
    if (this.playing) this.pause();
    else this.play();
  }

  setSpeed(s: number): void {
    const p = this.position();
    this.speedValue = clampSpeed(s);
    this.pos = p;
    this.wallAt = this.now();
    if (this.playing) {
      this.clear();
      this.tick();
    }
  }

  /** Jump to `to` seconds: forward plays the frames in between at once; backward resets and re-plays from 0. */
  seek(to: number): void {
    const target = Math.max(0, Math.min(this.duration, to));
    const cur = this.position();
    this.clear();
    if (target < cur || this.next === 0) {
      if (target < cur) this.sink.reset?.();
      this.next = 0;
    }
    this.finished = false;
    this.pos = target;
    this.wallAt = this.now();
    this.emitUntil(target);
    if (this.playing) this.tick();
    else if (this.next >= this.frames.length) this.finish();
  }

  stop(): void {
    this.playing = false;
    this.clear();
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private emitUntil(t: number): void {
    // Batch consecutive output frames into one write (fast-forward and dense output).
    let buf = '';
    while (this.next < this.frames.length && this.frames[this.next]!.t <= t) {
      const f = this.frames[this.next++]!;
      if (f.code === 'o') buf += f.data;
      else if (f.code === 'r') {
        if (buf) this.sink.output(buf);
        buf = '';
        const [c, r] = f.data.split('x').map(Number);
        this.sink.resize?.(c!, r!);
      } else if (f.code === 'm') {
        if (buf) this.sink.output(buf);
        buf = '';
        this.sink.marker?.(f.data);
      }
    }
    if (buf) this.sink.output(buf);
  }

  private finish(): void {
    this.playing = false;
    this.finished = true;
    this.pos = this.duration;
    this.clear();
    this.sink.end?.();
  }

  private tick(): void {
    if (!this.playing) return;
    const p = this.position();
    this.emitUntil(p);
    if (this.next >= this.frames.length) {
      this.finish();
      return;
    }
    const wait = ((this.frames[this.next]!.t - p) / this.speedValue) * 1000;
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.min(wait, 2_147_000_000)));
  }
}

function clampSpeed(s: number): number {
  if (!Number.isFinite(s) || s <= 0) return 1;
  return Math.min(1000, Math.max(0.05, s));
}
