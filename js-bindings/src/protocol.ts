// Generated from protocol/schema.json by scripts/generate-types.mjs. Do not edit.

export const PROTOCOL_VERSION = '1.0';

export interface CancelParams {
  id: number | string;
}
export interface Capabilities {
  methods: string[];
  wires: string[];
  image_formats: string[];
  max_image_pixels: number;
}
export interface DetectParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  image: ImageRef;
  /**
   * Lowest detector score reported.
   */
  min_score?: number;
  /**
   * Detector class names to keep; default: the detector's vehicle classes.
   */
  classes?: string[] | null;
}
/**
 * Exactly one of `path` (JPEG, PNG, WebP or TIFF file) or `mmap`.
 *
 */
export interface ImageRef {
  path?: string | null;
  mmap?: MmapImage | null;
}
/**
 * Bytes the client wrote to a file: an encoded image, or raw pixels.
 *
 */
export interface MmapImage {
  path: string;
  offset: number;
  length: number;
  encoding: 'jpeg' | 'png' | 'raw' | 'tiff' | 'webp';
  shape?: [number, number] | [number, number, number] | null;
  dtype?: 'uint8' | null;
  channel_order?: ('bgr' | 'bgra' | 'gray' | 'rgb' | 'rgba') | null;
}
export interface DetectResult {
  vehicles: Detection[];
  width: number;
  height: number;
  model: string;
}
export interface Detection {
  /**
   * [x1, y1, x2, y2] in original-image pixels
   *
   * @minItems 4
   * @maxItems 4
   */
  box: [number, number, number, number];
  score: number;
  label: string;
}
export interface EmbedParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  image: ImageRef;
  /**
   * Region to embed; the whole image when absent.
   */
  box?: [number, number, number, number] | null;
}
export interface EmbedResult {
  /**
   * L2-normalised float32. On the msgpack wire: binary, little-endian float32 (4 x dim bytes).
   */
  vector: number[];
  model: string;
  dim: number;
}
export interface InitializeParams {
  client_name?: string | null;
  client_version?: string | null;
  protocol_version?: string | null;
}
export interface InitializeResult {
  server_name: string;
  server_version: string;
  protocol_version: string;
  models: ModelInfo[];
  capabilities: Capabilities;
}
export interface ModelInfo {
  name: string;
  task: 'detect' | 'embed';
  version: string;
  file: string;
  sha256: string;
  input_size: number[];
  status: 'checksum_mismatch' | 'loaded' | 'missing';
  /**
   * Embedding size, for embedders.
   */
  output_dim?: number | null;
  /**
   * Why the model is not loaded, and the command that builds it.
   */
  problem?: string | null;
}
export interface PingResult {
  uptime_s: number;
}
export interface ProgressParams {
  /**
   * The request this progress belongs to.
   */
  id: number | string;
  done: number;
  total: number;
  /**
   * What the request is doing now.
   */
  stage: string;
}

/** Every request method: its params and result types. */
export interface Methods {
  'initialize': { params: InitializeParams; result: InitializeResult };
  'ping': { params: null; result: PingResult };
  'shutdown': { params: null; result: null };
  '$/cancelRequest': { params: CancelParams; result: null };
  'detect': { params: DetectParams; result: DetectResult };
  'embed': { params: EmbedParams; result: EmbedResult };
}

/** Notifications the sidecar sends. */
export interface Notifications {
  '$/progress': ProgressParams;
}

/** JSON-RPC error codes the sidecar answers with. */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  ImageUnreadable: -32001,
  ImageTooLarge: -32002,
  MmapOutOfRange: -32003,
  ModelMissing: -32004,
  RequestCancelled: -32800,
} as const;
