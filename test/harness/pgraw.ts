// A PostgreSQL client on a raw socket, for tests that must send what drivers do not (pipelined
// messages, a Terminate before the answer, malformed frames): logs in as demo-agent with a token
// (cleartext password, as the bastion asks without TLS) and hands over the socket and a reader of
// the bastion's frames.
import net from 'node:net';
import { B, FrameReader, encodePasswordMessage, encodeStartupMessage } from '../../src/proxy/postgres/codec.js';

export interface RawClient {
  sock: net.Socket;
  reader: FrameReader;
  /** Resolves once a frame of this type has been read (frames before it are consumed). */
  until(type: number, timeoutMs?: number): Promise<void>;
}

/** Connects to 127.0.0.1:port and logs in; resolves after the first ReadyForQuery. */
export async function rawLogin(port: number, password: string, params: [string, string][] = []): Promise<RawClient> {
  const sock = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  sock.on('error', () => undefined);
  const reader = new FrameReader();
  let wake: (() => void) | null = null;
  sock.on('data', (d: Buffer) => {
    reader.push(d);
    wake?.();
  });
  const until = async (type: number, timeoutMs = 200_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const f = reader.next();
      if (f && f.type === type) return;
      if (!f) await new Promise<void>((r) => ((wake = r), setTimeout(r, 200)));
    }
    throw new Error(`no '${String.fromCharCode(type)}' message from the bastion within ${timeoutMs} ms`);
  };
  sock.write(encodeStartupMessage([['user', 'demo-agent'], ['database', 'shop'], ...params]));
  await until(B.Authentication);
  sock.write(encodePasswordMessage(password));
  await until(B.ReadyForQuery);
  return { sock, reader, until };
}
