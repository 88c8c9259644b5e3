/**
 * Errors of the nft layer, classified so that callers branch on `kind`, never on message text.
 * Only this module and the exec backend look at what nft printed.
 */

/** What went wrong. */
export const NftErrorKind = {
  /** Input that nftproxy refuses to send (unsafe literal, malformed IR). */
  Invalid: 'invalid',
  /** An object the command needs does not exist (ENOENT). */
  NotFound: 'not-found',
  /** An object to create already exists with other contents (EEXIST). */
  Exists: 'exists',
  /** An object is still in use, e.g. a chain a map element still points at (EBUSY). */
  Busy: 'busy',
  /** nft could not be run at all, or lacks a capability nftproxy needs. */
  Unavailable: 'unavailable',
  /** Any other failure of nft or the kernel. */
  Failed: 'failed',
} as const;
export type NftErrorKind = (typeof NftErrorKind)[keyof typeof NftErrorKind];

/** An error from building, rendering or applying nftables state. */
export class NftError extends Error {
  override readonly name = 'NftError';

  constructor(
    readonly kind: NftErrorKind,
    message: string,
    /** What nft printed on stderr, when nft ran. */
    readonly stderr = '',
    /** nft's exit code, when nft ran and failed. */
    readonly exitCode?: number,
  ) {
    super(message);
  }

  static invalid(message: string): NftError {
    return new NftError(NftErrorKind.Invalid, message);
  }

  /** Classifies what nft printed on a failed run. */
  static fromNftOutput(stderr: string, exitCode: number | undefined): NftError {
    const first = stderr.split('\n').find((l) => l.includes('Error:')) ?? stderr.split('\n')[0] ?? '';
    const message = `nft failed (exit ${exitCode ?? '?'}): ${first.trim()}`;
    if (/No such file or directory/.test(stderr))
      return new NftError(NftErrorKind.NotFound, message, stderr, exitCode);
    if (/File exists/.test(stderr)) return new NftError(NftErrorKind.Exists, message, stderr, exitCode);
    if (/Device or resource busy/.test(stderr))
      return new NftError(NftErrorKind.Busy, message, stderr, exitCode);
    if (/Operation not permitted|Protocol not supported/.test(stderr)) {
      return new NftError(NftErrorKind.Unavailable, message, stderr, exitCode);
    }
    return new NftError(NftErrorKind.Failed, message, stderr, exitCode);
  }
}
