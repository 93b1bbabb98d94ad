// Stream masker for terminal and HTTP byte streams.
//
// Bytes are scanned as latin1 (one character per byte) so that offsets are byte offsets and
// untouched bytes are passed on exactly as received; detectors only match ASCII, so multi-byte
// UTF-8 characters act as separators and are never cut.
//
// The hold-back rule. After each write, everything is emitted except:
//   (a) an incomplete UTF-8 character or an incomplete escape sequence at the end (never split);
//   (b) the earliest trailing *candidate*: text at the end that later bytes could still turn into
//       a match or extend (a run of digits, a word that could be an email's local part, `ghp_…`,
//       `password=val…`, a PEM block without its END line…), and any match touching the end.
// Two timers release held bytes so that interactive echo keeps flowing:
//   - after `flushAfterMs` (default 3 ms) of holding, *weak* candidates are released: text that
//     carries nothing distinctive yet (up to 5 digits of a number — at most the issuer prefix that
//     PCI DSS allows to display —, a word with no `@`, a token's literal prefix such as `ghp_`, a
//     key name). *Strong* candidates stay held (6+ digits in a card-shaped run, `user@`, `ghp_x`,
//     a secret's value, a PEM block…).
//   - if no progress was made for `holdMaxMs` (default 250 ms), the stream is flushed as if it had
//     ended: complete matches are masked with their strategy; a strong candidate that is still
//     incomplete is masked whole (its letters and digits become `*` for digit-shaped detectors, or
//     it is replaced by `[REDACTED:<id>]`), and the characters that continue it afterwards are
//     masked too (a "continuation").
// Released text is remembered (the last `contextChars` characters, raw, never emitted again) and
// scanned together with new input: when a later chunk completes a match that began in released
// text, the part in the new chunk is masked (for length-preserving strategies such as last4, with
// the matching part of the masked form; otherwise with one `[REDACTED:<id>]` marker).
// Consequence: a secret is never emitted in full; what a pause can reveal is bounded to a weak
// prefix (≤ 5 leading digits of a card, an email's local part typed before its `@`).
// Held bytes never exceed `lookBehindBytes`: beyond that the stream is flushed as above (a long
// PEM block is masked whole and its remaining lines are swallowed up to its END line).
//
// ANSI: CSI sequences (colours, cursor moves) are removed from the scanned text, so a secret
// interrupted by colour codes (`4111\x1b[0m 1111 …`) is still found; when masked, the escape
// sequences inside it are re-emitted after the replacement, so the terminal state is unchanged.
// Other escape sequences count as separators. OSC/DCS strings are held until terminated.
//
// Fail closed: an exception while masking replaces the held data with `[REDACTED:masking-error]`.
// Call end() when the stream closes: held bytes are only emitted by end(), flush() or the timers
// (which are unref'd and do not keep the process alive).

import { PortcullisError, type MaskStrategy } from '../policy/types.js';
import { DEFAULT_DETECTORS, type Detector } from './detectors.js';
import { Hasher, redactMarker } from './strategies.js';
import { Collector, resolveFindings, RuleSet } from './text.js';
import type { DetectorId, DetectorRule, Finding } from './types.js';
import { maskCounts } from './stats.js';

export interface StreamMaskerOptions {
  rules: RuleSet;
  onOutput: (chunk: Buffer) => void;
  /** Most bytes ever held back (default 4096). */
  lookBehindBytes?: number;
  /** Weak candidates are released after this long (default 3 ms). */
  flushAfterMs?: number;
  /** With no progress for this long, everything is flushed, incomplete strong candidates masked (default 250 ms). */
  holdMaxMs?: number;
  /** Characters of released text kept to detect matches that continue into later chunks (default 512). */
  contextChars?: number;
  /** Treat ANSI escape sequences specially (default true). */
  ansi?: boolean;
  /**
   * Called when onOutput throws while a timer flushes held bytes (there is no caller to throw
   * to); without it such errors are dropped so that one session cannot crash the process.
   */
  onError?: (err: unknown) => void;
}

/**
 * normal: after a write; weak: the short timer (weak candidates released); force: held bytes
 * exceed lookBehindBytes; final: flush() or the idle cap; end: end().
 */
type Mode = 'normal' | 'weak' | 'force' | 'final' | 'end';

/**
 * The scanned text of the held bytes and how its characters map back to raw offsets. Without
 * escape sequences the two coincide. Otherwise the text is a list of segments: runs of bytes kept
 * one-for-one, and single `\0` placeholders standing for an escape sequence (a separator);
 * removed CSI sequences are the raw gaps between segments.
 *
 * With a byte buffer `out` whose first `at` bytes hold the remembered context, the text's bytes
 * are written after them and both are decoded as one string (`joined`): one string per write
 * instead of pieces, their join and the context + text concatenation (each a copy).
 */
class Clean {
  private readonly segC: number[] = [];
  private readonly segR: number[] = [];
  private readonly segB: boolean[] = [];
  private readonly pieces: string[] = [];
  private n = 0;
  text = '';
  /** The context followed by text, when built in one piece (else null). */
  joined: string | null = null;
  /** Raw offset where the unscanned remainder starts (incomplete UTF-8 or escape sequence). */
  limit = 0;
  identity = true;

  constructor(
    private readonly out: Buffer | null = null,
    private readonly at = 0,
  ) {}

  addText(b: Buffer, from: number, to: number): void {
    if (to <= from) return;
    this.segC.push(this.n);
    this.segR.push(from);
    this.segB.push(false);
    if (this.out) b.copy(this.out, this.at + this.n, from, to);
    else this.pieces.push(b.toString('latin1', from, to));
    this.n += to - from;
  }

  boundary(at: number): void {
    this.segC.push(this.n);
    this.segR.push(at);
    this.segB.push(true);
    if (this.out) this.out[this.at + this.n] = 0;
    else this.pieces.push('\u0000');
    this.n += 1;
  }

  finish(limit: number): void {
    if (this.out) {
      this.joined = this.out.toString('latin1', 0, this.at + this.n);
      this.text = this.joined.slice(this.at);
    } else {
      this.text = this.pieces.join('');
    }
    this.limit = limit;
    this.identity = false;
  }

  private seg(k: number): number {
    let lo = 0;
    let hi = this.segC.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segC[mid]! <= k) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  private nextRaw(i: number): number {
    return i + 1 < this.segR.length ? this.segR[i + 1]! : this.limit;
  }

  /** Raw offset of clean character k (k = text.length: the limit). */
  rawAt(k: number): number {
    if (this.identity) return k;
    if (k >= this.text.length) return this.limit;
    const i = this.seg(k);
    return this.segB[i] ? this.segR[i]! : this.segR[i]! + (k - this.segC[i]!);
  }

  /** Raw offset just after clean character to-1. */
  rawAfter(to: number): number {
    if (this.identity) return to;
    const i = this.seg(to - 1);
    return this.segB[i] ? this.nextRaw(i) : this.segR[i]! + (to - 1 - this.segC[i]!) + 1;
  }

  /** The escape bytes inside the raw span of clean characters [from, to), in order. */
  escapesIn(b: Buffer, from: number, to: number, parts: Buffer[]): void {
    if (this.identity || to <= from) return;
    const last = this.seg(to - 1);
    for (let i = this.seg(from); i <= last; i++) {
      if (this.segB[i]) {
        parts.push(b.subarray(this.segR[i]!, this.nextRaw(i)));
      } else if (i < last) {
        const len = this.segC[i + 1]! - this.segC[i]!;
        const gapFrom = this.segR[i]! + len;
        if (this.segR[i + 1]! > gapFrom) parts.push(b.subarray(gapFrom, this.segR[i + 1]!));
      }
    }
  }
}

/** Largest held-bytes-plus-chunk assembled in a stream masker's reused buffer (larger: a fresh one). */
const SCRATCH_MAX = 128 * 1024;
/** Above this size a masker's reused buffer is let go when nothing is held (idle sessions keep little). */
const SCRATCH_KEEP = 16 * 1024;
/** Largest context + clean text assembled in the shared text buffer (larger: decoded in pieces). */
const TEXT_SCRATCH_MAX = 192 * 1024;
/**
 * The text buffer, shared by every stream masker of the process: it is only used inside one
 * synchronous clean() (filled, then decoded into a new string), so no masker can see another's bytes.
 */
let textScratch: Buffer | null = null;

/** No held bytes (one shared empty Buffer: nothing can be written into it). */
const EMPTY = Buffer.alloc(0);

/** Length of an incomplete UTF-8 sequence at the end of b[0..end), else 0. */
function incompleteUtf8(b: Buffer, end: number): number {
  for (let k = 1; k <= 3 && k <= end; k++) {
    const c = b[end - k]!;
    if ((c & 0xc0) === 0x80) continue;
    if (c >= 0xc0) {
      const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
      return k < need ? k : 0;
    }
    return 0;
  }
  return 0;
}

/**
 * Digit-shaped text masked in place: letters and digits become `*`, printable ASCII separators stay,
 * anything else (escape placeholders re-emitted separately, control and non-ASCII bytes) is dropped.
 */
function starDigits(seg: string): string {
  let out = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg.charCodeAt(i);
    if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)) out += '*';
    else if (c >= 32 && c < 127) out += seg[i];
  }
  return out;
}

export class StreamMasker {
  private readonly rules: RuleSet;
  private readonly onOutput: (chunk: Buffer) => void;
  private readonly lookBehind: number;
  private readonly flushAfterMs: number;
  private readonly holdMaxMs: number;
  private readonly contextChars: number;
  private readonly ansi: boolean;
  private readonly onError: ((err: unknown) => void) | undefined;

  private pending: Buffer = EMPTY;
  /**
   * Reused memory for held bytes followed by a new chunk (instead of a new Buffer for every
   * write that finds bytes held). What is emitted never aliases it: output taken from it is
   * copied. Let go when nothing is held and it is larger than SCRATCH_KEEP.
   */
  private scratch: Buffer | null = null;
  /** `pending` is a view of `scratch`. */
  private pendingInScratch = false;
  /** Released clean text (raw values), the last contextChars characters. */
  private ctx = '';
  /** Absolute clean offset of ctx[0]. */
  private ctxAbs = 0;
  /** A candidate masked while incomplete: the characters that continue it are masked too. */
  private openRun: Detector | null = null;
  /** Absolute start of the finding whose continuation marker was last emitted. */
  private lastMarkerAbs = -1;
  private shortTimer: NodeJS.Timeout | null = null;
  private capTimer: NodeJS.Timeout | null = null;
  private ended = false;

  constructor(opts: StreamMaskerOptions) {
    this.rules = opts.rules;
    this.onOutput = opts.onOutput;
    this.lookBehind = opts.lookBehindBytes ?? 4096;
    this.flushAfterMs = opts.flushAfterMs ?? 3;
    this.holdMaxMs = opts.holdMaxMs ?? 250;
    this.contextChars = opts.contextChars ?? 512;
    this.ansi = opts.ansi ?? true;
    this.onError = opts.onError;
    for (const [k, v] of [
      ['lookBehindBytes', this.lookBehind],
      ['flushAfterMs', this.flushAfterMs],
      ['holdMaxMs', this.holdMaxMs],
      ['contextChars', this.contextChars],
    ] as const) {
      if (!Number.isFinite(v) || v < 0) {
        throw new PortcullisError('mask_bad_option', `stream masker: ${k} must be a non-negative number, got ${String(v)}`, { [k]: v });
      }
    }
    if (this.lookBehind < 64) throw new PortcullisError('mask_bad_option', 'stream masker: lookBehindBytes must be at least 64', {});
  }

  /** Bytes currently held back. */
  get heldBytes(): number {
    return this.pending.length;
  }

  write(chunk: Buffer | string): void {
    if (this.ended) throw new PortcullisError('mask_stream_ended', 'write after end() on a stream masker', {});
    const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    if (b.length === 0) return;
    this.append(b);
    this.run('normal');
    if (this.pending.length > this.lookBehind) this.run('force');
    this.arm();
  }

  /** pending := pending + b, in the reused scratch buffer when it fits. */
  private append(b: Buffer): void {
    const held = this.pending;
    if (held.length === 0) {
      this.pending = b;
      this.pendingInScratch = false;
      return;
    }
    const need = held.length + b.length;
    if (need > SCRATCH_MAX) {
      this.pending = Buffer.concat([held, b], need);
      this.pendingInScratch = false;
      return;
    }
    let s = this.scratch;
    if (s === null || s.length < need) {
      s = Buffer.allocUnsafeSlow(Math.min(SCRATCH_MAX, Math.max(need, 2 * (s?.length ?? 0), 4096)));
      this.scratch = s;
    }
    s.set(held, 0); // held may be a view of scratch itself: set() copies overlapping ranges correctly
    s.set(b, held.length);
    this.pending = s.subarray(0, need);
    this.pendingInScratch = true;
  }

  /** Empties the held bytes. */
  private dropPending(): void {
    this.pending = EMPTY;
    this.pendingInScratch = false;
    if (this.scratch && this.scratch.length > SCRATCH_KEEP) this.scratch = null;
  }

  /** Emits everything now, as if the stream had paused for holdMaxMs. */
  flush(): void {
    this.run('final');
    this.arm();
  }

  /** Emits everything (an incomplete trailing sequence included) and stops the timers. */
  end(): void {
    if (this.ended) return;
    this.run('end');
    this.ended = true;
    this.clearTimers();
  }

  private clearTimers(): void {
    if (this.shortTimer) clearTimeout(this.shortTimer);
    if (this.capTimer) clearTimeout(this.capTimer);
    this.shortTimer = null;
    this.capTimer = null;
  }

  private arm(): void {
    if (this.pending.length === 0) {
      this.clearTimers();
      return;
    }
    if (!this.shortTimer) {
      this.shortTimer = setTimeout(() => {
        this.shortTimer = null;
        this.fromTimer(() => this.run('weak'));
        if (this.pending.length === 0) this.clearTimers();
      }, this.flushAfterMs);
      this.shortTimer.unref();
    }
    if (!this.capTimer) {
      this.capTimer = setTimeout(() => {
        this.capTimer = null;
        this.fromTimer(() => this.run('final'));
        this.arm();
      }, this.holdMaxMs);
      this.capTimer.unref();
    }
  }

  private fromTimer(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.onError?.(err);
    }
  }

  /** Restarts the cap timer: progress was made, the held bytes are new. */
  private progressed(): void {
    if (this.capTimer) {
      clearTimeout(this.capTimer);
      this.capTimer = null;
    }
  }

  /**
   * The shared buffer where the context and the clean text are assembled before being decoded as
   * one string (`Clean.joined`), the context written at its start; null when they are too long.
   */
  private textBuffer(ctx: string, end: number): Buffer | null {
    const need = ctx.length + end;
    if (need > TEXT_SCRATCH_MAX) return null;
    let t = textScratch;
    if (t === null || t.length < need) {
      t = Buffer.allocUnsafeSlow(Math.min(TEXT_SCRATCH_MAX, Math.max(need, 2 * (t?.length ?? 0), 4096)));
      textScratch = t;
    }
    // the context is latin1 text (bytes and \0 placeholders): one byte per character
    if (t.write(ctx, 0, 'latin1') !== ctx.length) throw new Error('stream masker: context is not latin1');
    return t;
  }

  /** The scanned text of pending[0..end): latin1, CSI sequences removed, other escapes as separators. */
  private clean(end: number, final: boolean): Clean {
    const b = this.pending;
    const ctx = this.ctx;
    const out = this.textBuffer(ctx, end);
    const cl = new Clean(out, ctx.length);
    const esc = this.ansi ? b.indexOf(0x1b) : -1;
    if (esc === -1 || esc >= end) {
      if (out && ctx.length > 0) {
        b.copy(out, ctx.length, 0, end);
        cl.joined = out.toString('latin1', 0, ctx.length + end);
        cl.text = cl.joined.slice(ctx.length);
      } else {
        cl.text = b.toString('latin1', 0, end);
        if (ctx.length === 0) cl.joined = cl.text;
      }
      cl.limit = end;
      return cl;
    }
    let pos = 0;
    let limit = end;
    let sepAtLimit = false;
    let i = esc;
    while (i !== -1 && i < end) {
      cl.addText(b, pos, i);
      if (i + 1 >= end) {
        if (final) {
          cl.boundary(i);
          pos = end;
        } else {
          limit = i;
          pos = end;
        }
        break;
      }
      const c = b[i + 1]!;
      if (c === 0x5b) {
        // CSI: parameters and intermediates (0x20–0x3f), one final byte (0x40–0x7e)
        let j = i + 2;
        while (j < end && j - i < 256 && b[j]! >= 0x20 && b[j]! <= 0x3f) j++;
        if (j >= end && !final && j - i < 256) {
          limit = i;
          pos = end;
          break;
        }
        if (j < end && b[j]! >= 0x40 && b[j]! <= 0x7e) {
          pos = j + 1; // removed: a secret may run across it
        } else {
          cl.boundary(i);
          pos = i + 2;
        }
      } else if (c === 0x5d || c === 0x50 || c === 0x5f || c === 0x5e || c === 0x58) {
        // OSC / DCS / APC / PM / SOS: held until BEL or ST; the payload is scanned as text
        let t = -1;
        for (let j = i + 2; j < end; j++) {
          const d = b[j]!;
          if (d === 0x07 || (d === 0x1b && j + 1 < end && b[j + 1] === 0x5c)) {
            t = j;
            break;
          }
        }
        if (t === -1 && !final && end - i <= this.lookBehind) {
          limit = i;
          pos = end;
          sepAtLimit = true; // the string sequence separates what precedes it
          break;
        }
        cl.boundary(i);
        pos = i + 2;
      } else if (c >= 0x20 && c <= 0x2f) {
        // nF sequences (charset designations such as ESC ( B)
        let j = i + 1;
        while (j < end && b[j]! >= 0x20 && b[j]! <= 0x2f) j++;
        if (j >= end && !final) {
          limit = i;
          pos = end;
          sepAtLimit = true;
          break;
        }
        cl.boundary(i);
        pos = Math.min(end, j + 1);
      } else {
        cl.boundary(i);
        pos = i + 2;
      }
      i = b.indexOf(0x1b, pos);
    }
    if (pos < limit) cl.addText(b, pos, limit);
    if (sepAtLimit) cl.boundary(limit);
    cl.finish(limit);
    return cl;
  }

  private run(mode: Mode): void {
    if (this.pending.length === 0) return;
    let out: Buffer | null;
    try {
      out = this.process(mode);
    } catch {
      // fail closed: nothing of what was held goes out unmasked
      this.dropPending();
      this.ctx = '';
      this.openRun = null;
      out = Buffer.from(redactMarker('masking-error'), 'latin1');
    }
    if (out && out.length > 0) this.onOutput(out);
  }

  /** Processes the held bytes; returns what to emit. */
  private process(mode: Mode): Buffer | null {
    /** Scan as if no more input followed: complete matches at the end are masked, strong candidates forced. */
    const finalScan = mode !== 'normal' && mode !== 'weak';
    /** Also emit an incomplete UTF-8 character or escape sequence at the end. */
    const releaseAll = mode === 'final' || mode === 'end';
    const b = this.pending;
    let end = b.length;
    if (!releaseAll) end -= incompleteUtf8(b, end);
    const cl = this.clean(end, releaseAll);
    const text = cl.text;
    // Output is built from pieces of the held bytes (untouched bytes as received, escape sequences
    // re-emitted) and the replacements' UTF-8 bytes, copied once at the end: no latin1 string of
    // the raw bytes is built, joined and encoded again.
    const parts: Buffer[] = [];
    let outLen = 0;
    const raw = (from: number, to: number): void => {
      if (to <= from) return;
      parts.push(b.subarray(from, to));
      outLen += to - from;
    };
    let replaced = false;
    const pushEscapes = (from: number, to: number): void => {
      if (cl.identity) return;
      const before = parts.length;
      cl.escapesIn(b, from, to, parts);
      for (let i = before; i < parts.length; i++) outLen += parts[i]!.length;
    };
    const pushRep = (rep: string): void => {
      replaced = true;
      if (rep.length === 0) return;
      // eslint-disable-next-line no-control-regex -- ASCII test
      const bytes = /^[\x00-\x7f]*$/.test(rep) ? Buffer.from(rep, 'latin1') : Buffer.from(rep, 'utf8');
      parts.push(bytes);
      outLen += bytes.length;
    };
    let k0 = 0; // clean characters consumed by a continuation
    let cursorRaw = 0; // raw bytes accounted for

    // 1. a candidate masked while incomplete continues: mask what continues it
    if (this.openRun) {
      const d = this.openRun;
      const r = d.continueRun(text, 0);
      if (r.end > 0) {
        raw(0, cl.rawAt(0));
        pushRep(this.continuationMask(d, text.slice(0, r.end)));
        pushEscapes(0, r.end);
        cursorRaw = cl.rawAfter(r.end);
        this.remember(text.slice(0, r.end));
        k0 = r.end;
      }
      if (r.done) this.openRun = null;
    }

    // 2. detection over the remembered context and the rest
    const rest = k0 === 0 ? text : text.slice(k0);
    const base = this.ctx.length;
    // the context + text string built by clean() holds as long as no continuation changed the context
    const w = k0 === 0 && cl.joined !== null ? cl.joined : base === 0 ? rest : this.ctx + rest;
    const col = this.rules.collect(w, new Collector(true, finalScan));
    const findings = resolveFindings(col.findings.filter((f) => f.end > base));
    const wl = w.length;
    let hold = wl;
    let forced: { start: number; detector: Detector } | null = null;
    if (!finalScan) {
      for (const t of col.tails) if (mode === 'normal' || t.strong) hold = Math.min(hold, t.start);
      for (const f of findings) if (f.end >= wl) hold = Math.min(hold, f.start);
      for (let i = findings.length - 1; i >= 0; i--) {
        const f = findings[i]!;
        if (f.start < hold && f.end > hold) hold = f.start;
      }
      hold = Math.max(hold, base);
    } else if (mode !== 'end') {
      // nothing more may come for a while: a strong candidate is masked whole (at end() nothing
      // can complete it any more, so it is plain text)
      let fs = wl;
      let fd: Finding['detector'] | null = null;
      for (const t of col.tails) {
        if (t.strong && t.start < fs) {
          fs = t.start;
          fd = t.detector;
        }
      }
      if (fd !== null) {
        fs = Math.max(fs, base);
        for (const f of findings) if (f.start <= fs && f.end > fs) fs = f.end;
        if (fs < wl) forced = { start: fs, detector: this.rules.detectors.find((d) => d.id === fd)! };
      }
    }

    // 3. emit w[base .. hold): untouched bytes as received, findings replaced
    const cleanIdx = (wi: number): number => wi - base + k0;
    const toRaw = (wi: number): number => cl.rawAt(cleanIdx(wi));
    let lastOpen: Detector | null = null;
    const emitUntil = forced ? forced.start : hold;
    for (const f of findings) {
      if (f.start >= emitUntil) break;
      const a = Math.max(f.start, base);
      raw(cursorRaw, toRaw(a));
      const value = w.slice(f.start, f.end);
      if (f.start >= base) maskCounts.stream++;
      pushRep(f.start < base ? this.continuationOf(f, value, base - f.start) : this.rules.replacement(value, f));
      pushEscapes(cleanIdx(a), cleanIdx(f.end));
      cursorRaw = cl.rawAfter(cleanIdx(f.end));
      if (finalScan && f.end >= wl) lastOpen = this.rules.detectors.find((d) => d.id === f.detector) ?? null;
    }
    const holdRaw = toRaw(emitUntil);
    if (holdRaw > cursorRaw) {
      raw(cursorRaw, holdRaw);
      cursorRaw = holdRaw;
    }
    if (forced) {
      pushRep(this.forcedMask(forced.detector, w.slice(forced.start, wl)));
      pushEscapes(cleanIdx(forced.start), text.length);
      cursorRaw = cl.limit;
      lastOpen = forced.detector;
    }
    if (lastOpen) this.openRun = lastOpen;
    this.remember(w.slice(base, forced ? wl : hold));
    if (releaseAll && b.length > cursorRaw) {
      raw(cursorRaw, b.length);
      cursorRaw = b.length;
    }
    const inScratch = this.pendingInScratch;
    if (cursorRaw >= b.length) this.dropPending();
    else this.pending = b.subarray(cursorRaw);
    if (cursorRaw > 0) this.progressed();
    if (cursorRaw === 0) return null;
    // output taken from the scratch buffer is copied: the next write() reuses that memory
    if (inScratch) return Buffer.concat(parts, outLen);
    if (!replaced && cl.identity) return b.subarray(0, cursorRaw); // untouched: the bytes as received
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, outLen);
  }

  /** Appends released clean text to the context window. */
  private remember(s: string): void {
    if (s.length === 0) return;
    if (s.length >= this.contextChars) {
      // the new text alone fills the window: no concatenation (which would copy all of it)
      this.ctxAbs += this.ctx.length + s.length - this.contextChars;
      this.ctx = s.slice(s.length - this.contextChars);
      return;
    }
    const joined = this.ctx + s;
    if (joined.length <= this.contextChars) {
      this.ctx = joined;
      return;
    }
    const cut = joined.length - this.contextChars;
    this.ctxAbs += cut;
    this.ctx = joined.slice(cut);
  }

  /** The replacement for the part of a finding after its released prefix of `offset` characters. */
  private continuationOf(f: Finding, value: string, offset: number): string {
    if (!f.merged && this.rules.preservesLength(f.detector)) {
      const masked = this.rules.replacement(value, f);
      if (masked.length === value.length) return masked.slice(offset);
    }
    const abs = this.ctxAbs + f.start;
    if (this.lastMarkerAbs === abs) return '';
    this.lastMarkerAbs = abs;
    return redactMarker(f.detector);
  }

  /** An incomplete strong candidate masked whole. */
  private forcedMask(d: Detector, seg: string): string {
    return d.style === 'digits' ? starDigits(seg) : redactMarker(d.id);
  }

  /** Characters continuing a candidate that was masked while incomplete. */
  private continuationMask(d: Detector, seg: string): string {
    return d.style === 'digits' ? starDigits(seg) : '';
  }
}

export interface CreateStreamMaskerOptions extends Omit<StreamMaskerOptions, 'rules'> {
  /** Detector ids (masked with `strategy`) or full rules; default: every default-on detector. */
  detectors?: readonly (DetectorId | DetectorRule)[];
  /** Strategy for detectors given by id (default redact). */
  strategy?: MaskStrategy;
  keepFirst?: number;
  keepLast?: number;
  value?: string;
  /** Needed when a strategy is hash. */
  hmacKey?: string | Buffer;
}

/** A stream masker from detector ids or rules (the Masker's streamMasker() is the usual way). */
export function createStreamMasker(opts: CreateStreamMaskerOptions): StreamMasker {
  const strategy = opts.strategy ?? 'redact';
  const list = opts.detectors ?? DEFAULT_DETECTORS.map((d) => d.id);
  const rules: DetectorRule[] = list.map((d) =>
    typeof d === 'string'
      ? {
          detector: d,
          strategy,
          ...(opts.keepFirst !== undefined ? { keepFirst: opts.keepFirst } : {}),
          ...(opts.keepLast !== undefined ? { keepLast: opts.keepLast } : {}),
          ...(opts.value !== undefined ? { value: opts.value } : {}),
        }
      : d,
  );
  const hasher = opts.hmacKey !== undefined ? new Hasher(opts.hmacKey) : undefined;
  if (!hasher && rules.some((r) => r.strategy === 'hash')) {
    throw new PortcullisError('mask_no_hmac_key', 'stream masker: a detector uses strategy hash but no hmacKey was given', {});
  }
  return new StreamMasker({ ...opts, rules: new RuleSet(rules, hasher) });
}
