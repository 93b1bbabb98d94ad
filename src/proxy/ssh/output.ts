// The way out of a session: every byte the target sends passes through the session's stream
// masker before it reaches the agent's channel and the recording (the same masked bytes to
// both). Backpressure: when the agent's channel is full the upstream is paused until it drains.
import type { Writable } from 'node:stream';
import type { Masker, StreamMasker } from '../../masking/index.js';

/** Output chunks this small in a terminal are keystroke echo. */
const ECHO_SIZED = 8;

export interface OutputPipeOptions {
  masker: Masker;
  /** The agent's side (channel or channel.stderr). */
  sink: Writable;
  /** The recording's side (already-masked bytes). */
  record?: (b: Buffer) => void;
  /** Called when the sink is full / has drained (pause / resume the upstream). */
  onFull?: () => void;
  onDrain?: () => void;
  /** Interactive sessions release weak masking candidates sooner (keystroke echo). */
  interactive?: boolean;
  onError?: (e: unknown) => void;
}

export class OutputPipe {
  private readonly sm: StreamMasker;
  private full = false;
  private ended = false;

  constructor(private readonly o: OutputPipeOptions) {
    this.sm = o.masker.streamMasker({
      onOutput: (b) => this.emit(b),
      onError: o.onError,
    });
  }

  private emit(b: Buffer): void {
    if (b.length === 0) return;
    this.o.record?.(b);
    if (this.o.sink.destroyed || this.o.sink.writableEnded) return;
    const ok = this.o.sink.write(b);
    if (!ok && !this.full) {
      this.full = true;
      this.o.onFull?.();
      this.o.sink.once('drain', () => {
        this.full = false;
        this.o.onDrain?.();
      });
    }
  }

  write(b: Buffer): void {
    if (this.ended) return;
    this.sm.write(b);
    // keystroke echo in a terminal: release it now rather than on the masker's timer (≥ 1 ms);
    // flush() never leaks — a strong candidate still open (6+ digits of a card, `user@`) is masked
    if (this.o.interactive && b.length <= ECHO_SIZED && this.sm.heldBytes > 0) this.sm.flush();
  }

  /** Text from the bastion itself (already masked), after everything held so far. */
  notice(text: string): void {
    if (this.ended) return;
    this.sm.flush();
    this.emit(Buffer.from(text, 'utf8'));
  }

  /** Emit everything held (end of the stream). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.sm.end();
  }
}
