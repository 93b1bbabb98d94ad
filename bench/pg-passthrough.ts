// A bare Node TCP pass-through (pipe both ways, no protocol work): the ceiling any proxy written
// in Node reaches on this machine. bench/pg.bench.ts runs it as a separate process, as it runs
// pgbouncer, and reports Portcullis against it.
//
//   node dist/bench/pg-passthrough.js LISTEN_PORT UPSTREAM_PORT   (prints "listening" when ready)
import net from 'node:net';

const [listenPort, upPort] = process.argv.slice(2).map(Number);
if (!listenPort || !upPort) {
  process.stderr.write('usage: pg-passthrough LISTEN_PORT UPSTREAM_PORT\n');
  process.exit(2);
}
const server = net.createServer((client) => {
  client.setNoDelay(true);
  const up = net.connect(upPort, '127.0.0.1');
  up.setNoDelay(true);
  client.pipe(up);
  up.pipe(client);
  const close = (): void => {
    client.destroy();
    up.destroy();
  };
  client.on('error', close);
  up.on('error', close);
  client.on('close', close);
  up.on('close', close);
});
server.listen(listenPort, '127.0.0.1', () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
