import { ErrorCode } from './protocol.js';

export { ErrorCode };

/** A JSON-RPC error answered by the sidecar. `code` is one of `ErrorCode`. */
export class LiveryidError extends Error {
  readonly code: number;
  readonly data: unknown;
  readonly method: string;

  constructor(method: string, code: number, message: string, data?: unknown) {
    super(`${method}: ${message} (${code})`);
    this.name = 'LiveryidError';
    this.code = code;
    this.data = data;
    this.method = method;
  }
}

/** The sidecar process exited (or could not start) while calls were pending. */
export class SidecarExitedError extends Error {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;

  constructor(message: string, exitCode: number | null, signal: NodeJS.Signals | null) {
    super(message);
    this.name = 'SidecarExitedError';
    this.exitCode = exitCode;
    this.signal = signal;
  }
}
