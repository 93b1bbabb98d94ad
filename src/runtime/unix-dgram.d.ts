// Minimal type declarations for `unix-dgram` (a native addon: AF_UNIX SOCK_DGRAM sockets, which
// Node's dgram module lacks), covering what src/runtime/sdnotify.ts and its test use.
declare module 'unix-dgram' {
  import type { EventEmitter } from 'node:events';

  export interface UnixDgramSocket extends EventEmitter {
    /** Bind to a filesystem path (emits 'listening' or 'error'). */
    bind(path: string): void;
    connect(path: string): void;
    /** sendto(): unconnected sockets name the peer's path; the callback runs synchronously. */
    send(buf: Buffer, offset: number, length: number, path: string, callback?: (err?: Error & { code?: number | string }) => void): void;
    close(): void;
    on(event: 'message', listener: (msg: Buffer, rinfo: { size: number; path?: string }) => void): this;
    on(event: 'error', listener: (err: Error) => void): this;
    on(event: 'listening' | 'connect' | 'writable', listener: () => void): this;
    on(event: 'congestion', listener: (buf: Buffer) => void): this;
  }

  export function createSocket(type: 'unix_dgram', listener?: (msg: Buffer, rinfo: { size: number; path?: string }) => void): UnixDgramSocket;
}
