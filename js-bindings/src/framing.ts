// Wire framing, kept apart from the client logic. Two wires carry the same
// JSON-RPC messages:
//  - 'json': one UTF-8 JSON document per line;
//  - 'msgpack': a 4-byte big-endian length, then that many bytes of msgpack
//    (msgpack bytes may contain 0x0A, so no delimiter would do).
import { decode as msgpackDecode, encode as msgpackEncode } from '@msgpack/msgpack';

export type Wire = 'json' | 'msgpack';

export interface FrameDecoder {
  /** Feed bytes as they arrive; returns the whole messages now available. */
  push(chunk: Buffer): unknown[];
}

export function encodeFrame(wire: Wire, message: unknown): Buffer {
  if (wire === 'json') {
    return Buffer.from(JSON.stringify(message) + '\n', 'utf8');
  }
  const body = msgpackEncode(message);
  const frame = Buffer.allocUnsafe(4 + body.byteLength);
  frame.writeUInt32BE(body.byteLength, 0);
  frame.set(body, 4);
  return frame;
}

export function createDecoder(wire: Wire): FrameDecoder {
  return wire === 'json' ? new JsonLineDecoder() : new LengthPrefixedDecoder();
}

class JsonLineDecoder implements FrameDecoder {
  private pending: Buffer[] = [];

  push(chunk: Buffer): unknown[] {
    const messages: unknown[] = [];
    let start = 0;
    let newline = chunk.indexOf(0x0a, start);
    while (newline !== -1) {
      this.pending.push(chunk.subarray(start, newline));
      const line = Buffer.concat(this.pending).toString('utf8').trim();
      this.pending = [];
      if (line) messages.push(JSON.parse(line));
      start = newline + 1;
      newline = chunk.indexOf(0x0a, start);
    }
    if (start < chunk.length) this.pending.push(chunk.subarray(start));
    return messages;
  }
}

class LengthPrefixedDecoder implements FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): unknown[] {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const messages: unknown[] = [];
    while (this.buffer.length >= 4) {
      const size = this.buffer.readUInt32BE(0);
      if (this.buffer.length < 4 + size) break;
      messages.push(msgpackDecode(this.buffer.subarray(4, 4 + size)));
      this.buffer = this.buffer.subarray(4 + size);
    }
    return messages;
  }
}
