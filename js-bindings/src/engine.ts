// The typed client: spawns the sidecar, frames messages, matches responses
// to requests, and turns AbortSignals into `$/cancelRequest`.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { once } from 'node:events';

import { LiveryidError, SidecarExitedError } from './errors.js';
import { createDecoder, encodeFrame, type FrameDecoder, type Wire } from './framing.js';
import {
  PROTOCOL_VERSION,
  type AdaptParams,
  type AdaptResult,
  type Car,
  type CarDetail,
  type CarFields,
  type CarsMergeParams,
  type CarUpdateParams,
  type Detection,
  type DetectParams,
  type EmbedderUseResult,
  type EmbedResult,
  type EnrollParams,
  type EnrollResult,
  type EntriesImportResult,
  type Entry,
  type ExportParams,
  type ExportResult,
  type IdentifiedVehicle,
  type IdentifyParams,
  type ImageRef,
  type InitializeResult,
  type Methods,
  type PingResult,
  type ProgressParams,
  type ResultsQueryParams,
  type ResultsQueryResult,
  type ReviewResult,
  type TagParams,
  type TagResult,
} from './protocol.js';

export type Box = [number, number, number, number];

/** An embedding as the client returns it: the vector as a Float32Array on either wire. */
export type Embedding = Omit<EmbedResult, 'vector'> & { vector: Float32Array };

/** What `request(method)` resolves to: the protocol's result type, with vectors as Float32Array. */
export type ResultOf<M extends keyof Methods> = M extends 'embed' ? Embedding : Methods[M]['result'];

export interface SpawnOptions {
  /** Executable: the compiled sidecar, or a Python. Default: $LIVERYID_SIDECAR, else `liveryid` on PATH. */
  command?: string;
  /** Arguments before `serve`, e.g. `['-m', 'sidecar']` when `command` is a Python. */
  args?: string[];
  /** 'json' (default) or 'msgpack' (binary vectors, faster). */
  wire?: Wire;
  /** Folder with manifest.json and the ONNX models (the sidecar's `--models`). */
  models?: string;
  /** Library folder to open (created if absent): enrolled cars and tagging results live there. */
  library?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Respawn the sidecar after an unexpected exit. Calls pending at the exit are rejected either way. */
  restart?: boolean;
  /** Receives each line the sidecar logs on stderr. Default: kept only for error messages. */
  onLog?: (line: string) => void;
  clientName?: string;
}

export interface CallOptions {
  /** Aborting sends `$/cancelRequest`; the call then rejects with code -32800 (ErrorCode.RequestCancelled). */
  signal?: AbortSignal;
  /** Receives `$/progress` notifications for this call. */
  onProgress?: (progress: ProgressParams) => void;
}

interface Pending {
  method: string;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
  onProgress?: (progress: ProgressParams) => void;
}

interface RpcResponse {
  id: number | string | null;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
  method?: string;
  params?: unknown;
}

const STDERR_TAIL = 40;
const SHUTDOWN_GRACE_MS = 10_000;

export class Engine {
  /** What the sidecar reported at `initialize`: versions, models, capabilities. */
  info!: InitializeResult;

  private readonly options: SpawnOptions;
  private readonly wire: Wire;
  private child!: ChildProcessWithoutNullStreams;
  private decoder!: FrameDecoder;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closing = false;
  private exited!: Promise<void>;
  private stderrTail: string[] = [];

  private constructor(options: SpawnOptions) {
    this.options = options;
    this.wire = options.wire ?? 'json';
  }

  /** Start the sidecar and `initialize` it. */
  static async spawn(options: SpawnOptions = {}): Promise<Engine> {
    const engine = new Engine(options);
    await engine.start();
    return engine;
  }

  /** The sidecar's process id (it changes when `restart` respawns it). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The vehicles in an image, best first; boxes in original-image pixels. */
  async detect(
    image: ImageRef,
    options: Omit<DetectParams, 'image' | 'progress'> & CallOptions = {},
  ): Promise<Detection[]> {
    const { signal, onProgress, ...params } = options;
    const result = await this.request('detect', { ...params, image, progress: onProgress !== undefined }, { signal, onProgress });
    return result.vehicles;
  }

  /** The L2-normalised appearance vector of an image region (the whole image without a box). */
  async embed(image: ImageRef, box?: Box | null, options: CallOptions = {}): Promise<Float32Array> {
    const params = { image, box: box ?? null, progress: options.onProgress !== undefined };
    return (await this.request('embed', params, options)).vector;
  }

  ping(): Promise<PingResult> {
    return this.request('ping', null);
  }

  /** Create a car (or add references to `car.id`) from reference images; warnings say where the subject was unclear. */
  enroll(
    car: CarFields,
    images: ImageRef[],
    options: { boxes?: (Box | null)[] } & CallOptions = {},
  ): Promise<EnrollResult> {
    const { signal, onProgress, boxes } = options;
    // An empty list is the sidecar's to refuse (-32602), like any other invalid params.
    const params = { car, images: images as EnrollParams['images'], boxes: boxes ?? null, progress: onProgress !== undefined };
    return this.request('enroll', params, { signal, onProgress });
  }

  /** Every vehicle in an image with its decision (match, ambiguous, unknown) and candidate cars. */
  async identify(
    image: ImageRef,
    options: Omit<IdentifyParams, 'image' | 'progress'> & CallOptions = {},
  ): Promise<IdentifiedVehicle[]> {
    const { signal, onProgress, ...params } = options;
    const result = await this.request('identify', { ...params, image, progress: onProgress !== undefined }, { signal, onProgress });
    return result.vehicles;
  }

  /** Identify every photo of folders or files, storing the results in the library (re-runs skip done photos). */
  tag(paths: string[], options: Omit<TagParams, 'images' | 'progress'> & CallOptions = {}): Promise<TagResult> {
    const { signal, onProgress, ...params } = options;
    const request = { ...params, images: paths as TagParams['images'], progress: onProgress !== undefined };
    return this.request('tag', request, { signal, onProgress });
  }

  /**
   * Create or update cars from an entry list: a CSV file's path, or rows
   * (number, driver, team, class, car, colours). A car with a number needs no
   * reference photo: identify names it when it reads the number.
   */
  importEntries(entries: { csv: string } | { rows: Entry[] }): Promise<EntriesImportResult> {
    return this.request('entries.import', entries);
  }

  async cars(): Promise<Car[]> {
    return (await this.request('cars.list', null)).cars;
  }

  car(id: string): Promise<CarDetail> {
    return this.request('cars.get', { id });
  }

  /** Change only the given fields. */
  updateCar(id: string, changes: Omit<CarUpdateParams, 'id'>): Promise<Car> {
    return this.request('cars.update', { ...changes, id });
  }

  async removeCar(id: string): Promise<void> {
    await this.request('cars.remove', { id });
  }

  /** Move the references and results of `sources` into `into`, then remove them. */
  mergeCars(into: string, sources: string[]): Promise<Car> {
    return this.request('cars.merge', { into, sources: sources as CarsMergeParams['sources'] });
  }

  async removeReference(id: number): Promise<void> {
    await this.request('references.remove', { id });
  }

  /** The user confirms a detection's car (default: the matched one), optionally adding the crop as a reference. */
  confirm(detectionId: number, options: { carId?: string; addAsReference?: boolean } = {}): Promise<ReviewResult> {
    const params = { detection_id: detectionId, car_id: options.carId ?? null, add_as_reference: options.addAsReference ?? false };
    return this.request('results.confirm', params);
  }

  reject(detectionId: number): Promise<ReviewResult> {
    return this.request('results.reject', { detection_id: detectionId });
  }

  results(query: ResultsQueryParams = {}): Promise<ResultsQueryResult> {
    return this.request('results.query', query);
  }

  export(format: ExportParams['format'], options: Omit<ExportParams, 'format'> = {}): Promise<ExportResult> {
    return this.request('export', { format, ...options });
  }

  /**
   * Fine-tune the embedder on an event's unlabelled photos. The library uses
   * the new model only when it is better on the enrolled references (see
   * `before` / `after`); it takes minutes, reports progress and can be aborted.
   */
  adapt(paths: string[], options: Omit<AdaptParams, 'images' | 'progress'> & CallOptions = {}): Promise<AdaptResult> {
    const { signal, onProgress, ...params } = options;
    const request = { ...params, images: paths as AdaptParams['images'], progress: onProgress !== undefined };
    return this.request('adapt', request, { signal, onProgress });
  }

  /**
   * Switch the library to another embedder of the manifest (null: the one the
   * sidecar started with). Its references are embedded first, with progress,
   * while identify and tag keep the current model; aborted, the library stays as it was.
   */
  useEmbedder(name: string | null = null, options: CallOptions = {}): Promise<EmbedderUseResult> {
    return this.request('embedder.use', { embedder: name, progress: options.onProgress !== undefined }, options);
  }

  /** Go back to the shipped embedder; returns the model the library now uses. */
  async revertAdapt(): Promise<string> {
    return (await this.request('adapt.revert', null)).model;
  }

  /** Any method of the protocol, typed by the method table. */
  request<M extends keyof Methods>(method: M, params: Methods[M]['params'], options: CallOptions = {}): Promise<ResultOf<M>> {
    const id = this.nextId++;
    const { signal, onProgress } = options;
    if (signal?.aborted) {
      return Promise.reject(new LiveryidError(method, -32800, 'request cancelled before it was sent'));
    }
    return new Promise<ResultOf<M>>((resolve, reject) => {
      const onAbort = () => this.notify('$/cancelRequest', { id });
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        method,
        onProgress,
        resolve: (value) => {
          signal?.removeEventListener('abort', onAbort);
          resolve((method === 'embed' ? toEmbedding(value as RawEmbedResult) : value) as ResultOf<M>);
        },
        reject: (reason) => {
          signal?.removeEventListener('abort', onAbort);
          reject(reason);
        },
      });
      this.send({ jsonrpc: '2.0', id, method, ...(params === null ? {} : { params }) });
    });
  }

  /** Ask the sidecar to shut down and wait for it to exit (killing it if it does not). */
  async close(): Promise<void> {
    if (this.closing) return this.exited;
    this.closing = true;
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const shutdown = this.request('shutdown', null).catch(() => undefined);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), SHUTDOWN_GRACE_MS);
      await shutdown;
      this.child.stdin.end();
      await this.exited;
      clearTimeout(timer);
    }
  }

  // --- process -------------------------------------------------------------

  private async start(): Promise<void> {
    const { command, args, models, cwd, env } = this.options;
    const argv = [...(args ?? []), ...(models ? ['--models', models] : []), 'serve', '--wire', this.wire];
    this.child = spawn(command ?? process.env.LIVERYID_SIDECAR ?? 'liveryid', argv, {
      cwd,
      env: env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
    this.decoder = createDecoder(this.wire);
    this.stderrTail = [];
    const child = this.child;
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.onExit(code, signal);
        resolve();
      });
    });
    child.stdout.on('data', (chunk: Buffer) => this.onData(chunk));
    child.stdin.on('error', () => undefined); // a dead pipe surfaces as the exit below
    let partial = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        this.stderrTail.push(line);
        if (this.stderrTail.length > STDERR_TAIL) this.stderrTail.shift();
        this.options.onLog?.(line);
      }
    });
    const spawnError = once(child, 'error').then(([error]) => {
      throw new SidecarExitedError(`cannot start the sidecar: ${(error as Error).message}`, null, null);
    });
    this.info = await Promise.race([
      this.request('initialize', {
        client_name: this.options.clientName ?? 'liveryid-js',
        client_version: '0.1.0',
        protocol_version: PROTOCOL_VERSION,
        library: this.options.library ?? null,
      }),
      spawnError,
    ]);
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    const expected = this.closing;
    const detail = this.stderrTail.slice(-10).join('\n');
    const error = new SidecarExitedError(
      `the sidecar exited (code ${code}, signal ${signal})${detail ? `; its last log lines:\n${detail}` : ''}`,
      code,
      signal,
    );
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
    if (!expected && this.options.restart) {
      this.start().catch((err: unknown) => this.options.onLog?.(`restart failed: ${String(err)}`));
    }
  }

  private onData(chunk: Buffer): void {
    let messages: unknown[];
    try {
      messages = this.decoder.push(chunk);
    } catch (error) {
      this.options.onLog?.(`undecodable frame from the sidecar: ${String(error)}`);
      this.child.kill();
      return;
    }
    for (const message of messages as RpcResponse[]) {
      if (message.method === '$/progress') {
        const progress = message.params as ProgressParams;
        this.pending.get(progress.id as number)?.onProgress?.(progress);
        continue;
      }
      if (typeof message.id !== 'number') continue; // errors for unparseable frames: none of ours
      const call = this.pending.get(message.id);
      if (!call) continue;
      this.pending.delete(message.id);
      if (message.error) {
        call.reject(new LiveryidError(call.method, message.error.code, message.error.message, message.error.data));
      } else {
        call.resolve(message.result);
      }
    }
  }

  private send(message: object): void {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return; // onExit rejected the call
    this.child.stdin.write(encodeFrame(this.wire, message));
  }

  private notify(method: string, params: unknown): void {
    this.send({ jsonrpc: '2.0', method, params });
  }
}

type RawEmbedResult = Omit<EmbedResult, 'vector'> & { vector: number[] | Uint8Array };

/** JSON gives numbers, msgpack little-endian float32 bytes; both become a Float32Array. */
function toEmbedding(raw: RawEmbedResult): Embedding {
  const { vector } = raw;
  if (!(vector instanceof Uint8Array)) return { ...raw, vector: Float32Array.from(vector) };
  // The bytes may sit at any offset of the frame buffer: copy into an aligned array.
  const view = new DataView(vector.buffer, vector.byteOffset, vector.byteLength);
  const out = new Float32Array(vector.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return { ...raw, vector: out };
}
