// Free loopback ports for tests: the same helpers the demo uses (src/demo/ports.ts).
export { freePort, portIsFree } from '../../src/demo/ports.js';
