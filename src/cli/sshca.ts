// `portcullis ssh ca`: the known_hosts line agents need for ProxyJump through the bastion
// (`@cert-authority * <host CA public key>`). The bastion makes the CA key on its first start
// (src/proxy/ssh/hostca.ts); this command only reads it, so it never creates a key owned by the
// wrong user.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HOST_CA_FILE } from '../proxy/ssh/hostca.js';
import { EXIT, dataDirFrom } from './util.js';

export function sshCa(opts: { dataDir?: string }): number {
  const pub = join(dataDirFrom(opts.dataDir), 'keys', HOST_CA_FILE + '.pub');
  if (!existsSync(pub)) {
    process.stderr.write(`portcullis: ${pub} does not exist yet: the bastion makes its host CA on its first start (portcullis serve)\n`);
    return EXIT.FAILED;
  }
  const line = readFileSync(pub, 'utf8').trim();
  if (!/^ssh-ed25519 [A-Za-z0-9+/=]+( .*)?$/.test(line)) {
    process.stderr.write(`portcullis: ${pub}: not an ssh-ed25519 public key line\n`);
    return EXIT.FAILED;
  }
  process.stdout.write(`@cert-authority * ${line}\n`);
  return EXIT.OK;
}
