// Shared CLI bits: exit codes (CONTRACT.md: 0 ok, 1 check failed / denied, 2 usage or config
// error) and the usage error type.
export const EXIT = { OK: 0, FAILED: 1, USAGE: 2 } as const;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function dataDirFrom(flag: string | undefined): string {
  return flag ?? process.env.PORTCULLIS_DATA_DIR ?? '/var/lib/portcullis';
}

/** The version `--version` prints and the metrics report. */
export const VERSION = '0.1.0';
