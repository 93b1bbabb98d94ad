// Splits a streamed Kubernetes list (`{"kind":"…List",…,"items":[…]}`, or a Table's `"rows"`)
// into its head, its elements one by one and its tail, so that a masked list is parsed and
// rewritten one object at a time instead of buffered whole. Pure text scanning, no I/O: strings
// and escapes are tracked so that brackets inside values never count. A document without a
// top-level `items`/`rows` array (a single object, a Status) comes back whole.
import { StringDecoder } from 'node:string_decoder';

export interface SplitHandlers {
  /** The document up to and including the `[` of its top-level items/rows array. */
  head(text: string): void;
  /** One element of the array, as raw JSON text. */
  item(text: string): void;
  /** Everything after the array's `]` (called by end()). */
  tail(text: string): void;
  /** The document had no top-level items/rows array: all of it (called by end()). */
  whole(text: string): void;
}

const Q = 0x22; // "
const BS = 0x5c; // \
const LB = 0x7b; // {
const RB = 0x7d; // }
const LS = 0x5b; // [
const RS = 0x5d; // ]
const COMMA = 0x2c;
const COLON = 0x3a;

export class JsonListSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private buf = '';
  /** Scan position in buf. */
  private pos = 0;
  private depth = 0;
  private inStr = false;
  private strStart = 0;
  private phase: 'head' | 'items' | 'tail' = 'head';
  /** At depth 1: the next string is a key. */
  private expectKey = false;
  private keyCandidate: string | null = null;
  private currentKey: string | null = null;
  /** Start (in buf) of the element being read, or -1. */
  private itemStart = -1;
  private ended = false;

  constructor(
    private readonly h: SplitHandlers,
    private readonly arrays: ReadonlySet<string> = new Set(['items', 'rows']),
  ) {}

  write(chunk: Buffer): void {
    this.buf += this.decoder.write(chunk);
    this.scan();
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.buf += this.decoder.end();
    this.scan();
    if (this.phase === 'head') this.h.whole(this.buf);
    else if (this.phase === 'tail') this.h.tail(this.buf);
    else throw new SyntaxError('the list ended inside its items array');
  }

  private scan(): void {
    const s = this.buf;
    let i = this.pos;
    const n = s.length;
    let tailStart = 0;
    while (i < n) {
      if (this.inStr) {
        const q = s.indexOf('"', i);
        if (q === -1) {
          i = n;
          break;
        }
        let bs = 0;
        for (let j = q - 1; j > this.strStart && s.charCodeAt(j) === BS; j--) bs++;
        if (bs % 2 === 1) {
          i = q + 1;
          continue;
        }
        this.inStr = false;
        if (this.depth === 1 && this.expectKey) {
          this.keyCandidate = s.slice(this.strStart + 1, q);
          this.expectKey = false;
        }
        i = q + 1;
        continue;
      }
      const c = s.charCodeAt(i);
      if (c === Q) {
        this.inStr = true;
        this.strStart = i;
        if (this.phase === 'items' && this.depth === 2 && this.itemStart < 0) this.itemStart = i;
      } else if (c === LB || c === LS) {
        if (this.phase === 'head' && this.depth === 1 && c === LS && this.currentKey !== null && this.arrays.has(this.currentKey)) {
          this.h.head(s.slice(0, i + 1));
          this.phase = 'items';
          this.depth = 2;
        } else {
          if (this.phase === 'items' && this.depth === 2 && this.itemStart < 0) this.itemStart = i;
          this.depth++;
          if (c === LB && this.depth === 1) this.expectKey = true;
        }
      } else if (c === RB || c === RS) {
        if (this.phase === 'items' && this.depth === 2 && c === RS) {
          this.emitItem(s, i);
          this.phase = 'tail';
          this.depth = 1;
          tailStart = i + 1;
        } else this.depth--;
      } else if (c === COMMA) {
        if (this.depth === 1) {
          this.expectKey = true;
          this.currentKey = null;
        } else if (this.phase === 'items' && this.depth === 2) this.emitItem(s, i);
      } else if (c === COLON) {
        if (this.depth === 1) this.currentKey = this.keyCandidate;
      } else if (this.phase === 'items' && this.depth === 2 && this.itemStart < 0 && c > 0x20) {
        this.itemStart = i; // a number or literal element
      }
      i++;
    }
    // Keep only what is still needed: the head until the array starts, the element being read,
    // the tail once the array has ended.
    let keep = 0;
    if (this.phase === 'items') keep = this.itemStart >= 0 ? this.itemStart : i;
    else if (this.phase === 'tail') keep = Math.min(tailStart, i);
    if (keep > 0) {
      this.buf = s.slice(keep);
      if (this.itemStart >= 0) this.itemStart -= keep;
      this.strStart -= keep;
    }
    this.pos = i - keep;
  }

  private emitItem(s: string, end: number): void {
    if (this.itemStart < 0) return;
    const text = s.slice(this.itemStart, end);
    this.itemStart = -1;
    this.h.item(text);
  }
}
