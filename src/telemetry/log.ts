/**
 * Structured logs: one JSON object per line on stderr, with a level, a message and fields.
 */

/** Log levels, least to most severe. */
export const LogLevel = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LogLevel;

/** A structured logger. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** Writes JSON lines at or above `level` to `write` (default stderr). */
export function jsonLogger(
  level: LogLevel = 'info',
  write: (line: string) => void = (l) => process.stderr.write(l),
): Logger {
  const min = LogLevel[level];
  const log =
    (lvl: LogLevel) =>
    (msg: string, fields: Record<string, unknown> = {}) => {
      if (LogLevel[lvl] < min) return;
      const errorFields = fields.error instanceof Error ? { error: fields.error.message } : {};
      write(
        JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields, ...errorFields }) + '\n',
      );
    };
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}

/** A logger that drops everything. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
