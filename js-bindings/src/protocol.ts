// Generated from protocol/schema.json by scripts/generate-types.mjs. Do not edit.

export const PROTOCOL_VERSION = '1.0';

export interface AdaptParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  /**
   * Photos and folders of the event (unlabelled; folders are walked).
   *
   * @minItems 1
   */
  images: [string, ...string[]];
  recursive?: boolean;
  /**
   * Cluster-then-train rounds.
   */
  rounds?: number;
  /**
   * Training steps per round (64 crops each; about 2.5 s a step on 2 cores).
   */
  iterations?: number;
  /**
   * Photos used at most, spread over the event.
   */
  max_photos?: number;
  /**
   * Use the new model when it is better on the enrolled references (false: measure only).
   */
  switch?: boolean;
  /**
   * Every car in the photos is enrolled (the whole entry list): crops that look like unenrolled cars are enrolled ones the current model misses, and the new model may match them.
   */
  whole_field?: boolean;
}
export interface AdaptResult {
  /**
   * The adapted model's name (kept in the library).
   */
  model: string;
  adapted_from: string;
  photos: number;
  /**
   * Vehicle crops found in the photos: the unlabelled training data.
   */
  crops: number;
  /**
   * Clustering radius of the last round: the one that best kept the references' cars apart.
   */
  radius: number;
  /**
   * Pseudo-identities in the last round.
   */
  clusters: number;
  /**
   * Crops in some cluster in the last round (the rest sat out).
   */
  clustered: number;
  before: ReferenceCheck;
  after: ReferenceCheck;
  /**
   * The new model is better on the enrolled references.
   */
  better: boolean;
  unknowns: UnknownCheck;
  switched: boolean;
  reason: string;
  failed: TagFailure[];
  /**
   * Seconds per stage: references (read and embed the enrolled references), event (read the photos and find their vehicles), train (the rounds and the export), check (the new model on the references, and the event's apparently unenrolled cars under both models).
   */
  stage_seconds: {
    [k: string]: number | undefined;
  };
}
export interface ReferenceCheck {
  /**
   * References of cars with two or more, each matched against the rest.
   */
  references: number;
  rank1: number;
  true_match: number;
  /**
   * References matched to another car when their own car is left out.
   */
  false_match: number;
}
export interface UnknownCheck {
  /**
   * Event crops in clusters none of whose crops the current model matches to an enrolled car: as far as adapt can tell, cars nobody enrolled.
   */
  crops: number;
  /**
   * Of those, crops the new model matches to an enrolled car. More than 1% keeps the current model (unless `whole_field`): an unenrolled car learnt as an enrolled look-alike, which the references cannot show.
   */
  matched: number;
}
export interface TagFailure {
  path: string;
  code: number;
  message: string;
}
export interface AdaptRevertResult {
  /**
   * The embedder the library uses now.
   */
  model: string;
}
/**
 * What appearance alone decided.
 *
 */
export interface AppearanceEvidence {
  decision: 'ambiguous' | 'match' | 'unknown';
  car_id: string | null;
  score: number | null;
}
export interface CancelParams {
  id: number | string;
}
export interface Candidate {
  car_id: string;
  label: string;
  /**
   * Similarity of the car's closest reference, which the match threshold applies to; null for a car that only the racing number read names.
   */
  score: number | null;
  /**
   * Similarity of the mean of the car's references (its livery over every view): appearance ranks the candidates by it, and a match must lead the runner-up on it by the margin; null as `score`.
   */
  mean_score?: number | null;
  /**
   * Similarity of this car's mean reference to its closest other enrolled car's: appearance matches the car only if `mean_score` reaches it (it looks more like the car than the car's look-alike does); null when no other car is enrolled, or as `score`.
   */
  rival_score?: number | null;
}
export interface Capabilities {
  methods: string[];
  wires: string[];
  image_formats: string[];
  max_image_pixels: number;
}
export interface Car {
  id: string;
  label: string;
  number: string | null;
  team: string | null;
  driver: string | null;
  meta: {
    [k: string]: unknown | undefined;
  };
  /**
   * Number of reference images.
   */
  references: number;
}
export interface CarDetail {
  car: Car;
  references: Reference[];
}
export interface Reference {
  id: number;
  car_id: string;
  source: string;
  /**
   * [x1, y1, x2, y2] in original-image pixels
   *
   * @minItems 4
   * @maxItems 4
   */
  box: [number, number, number, number];
  /**
   * Detector score of the reference box; 1 for a box the user gave, 0 for a whole image.
   */
  quality: number;
  added_at: number;
  /**
   * Words read on the reference's livery (sponsors, names), which break appearance's ties between cars; null when never read: added by an earlier version, or from a tagged detection, and its photo could not be read again (opening the library reads the words of those whose photo is there).
   */
  words?: string[] | null;
}
export interface CarFields {
  label?: string;
  number?: string | null;
  team?: string | null;
  driver?: string | null;
  meta?: {
    [k: string]: unknown | undefined;
  };
  /**
   * Existing car to extend, or the id for a new one (generated if absent).
   */
  id?: string;
}
export interface CarIdParams {
  id: string;
}
export interface CarUpdateParams {
  label?: string;
  number?: string | null;
  team?: string | null;
  driver?: string | null;
  meta?: {
    [k: string]: unknown | undefined;
  };
  id: string;
}
export interface CarsListResult {
  cars: Car[];
}
export interface CarsMergeParams {
  into: string;
  /**
   * Cars whose references and results move into `into`; they are then removed.
   *
   * @minItems 1
   */
  sources: [string, ...string[]];
}
export interface DetectParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  image: ImageRef;
  /**
   * Lowest detector score reported; default: the detector's calibrated one, and where nothing reaches it, the best box from the detector's lower lone score, alone.
   */
  min_score?: number | null;
  /**
   * Also look for small, distant cars in a tiles x tiles grid of overlapping parts of the photo, each seen at the detector's full input size: tiles^2 + 1 detector runs a photo, and more false boxes; 2 finds the most (`python -m bench.tiling`). 1: the whole photo only.
   */
  tiles?: number;
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
  /**
   * For a camera RAW (its embedded JPEG preview is what is analysed): sensor pixels per image pixel, so sensor coordinates are box x scale. Null for other images.
   */
  sensor_scale?: number | null;
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
export interface EmbedderUseParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  /**
   * A model of the manifest (`initialize` lists them); null: the one the sidecar started with.
   */
  embedder?: string | null;
}
export interface EmbedderUseResult {
  /**
   * The embedder the library uses now (its adaptation, if it has one).
   */
  model: string;
  /**
   * References embedded by it now (others were already).
   */
  embedded: number;
  /**
   * References whose photo could not be read again: left out of its index.
   */
  unreadable: number;
  /**
   * References in its index.
   */
  references: number;
}
export interface EnrollParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  car: CarFields;
  /**
   * @minItems 1
   */
  images: [ImageRef, ...ImageRef[]];
  /**
   * One box per image (null: detect it). Without boxes the dominant vehicle of each image is used.
   */
  boxes?: ([number, number, number, number] | null)[] | null;
}
export interface EnrollResult {
  car: Car;
  references: Reference[];
  warnings: EnrollWarning[];
  /**
   * Enrolled cars as alike as the match threshold or more, most alike first: appearance alone confuses photos of them with this car (cars of one make and shape, liveries alike), so the racing number, more references, or review decide.
   */
  look_alikes?: LookAlike[];
}
export interface EnrollWarning {
  /**
   * Index into `images`.
   */
  image: number;
  problem: 'no_vehicle' | 'several_vehicles';
  message: string;
  boxes?: [number, number, number, number][];
}
export interface LookAlike {
  car_id: string;
  label: string;
  /**
   * Of the two cars' mean references (each car's livery over its views).
   */
  similarity: number;
}
/**
 * Exactly one of `csv` or `rows`.
 *
 */
export interface EntriesImportParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  /**
   * Path of a CSV entry list with a header row: number, driver(s), team, class, car, colours, label (usual synonyms and `,` `;` or tab separators are understood).
   */
  csv?: string | null;
  rows?: Entry[] | null;
}
/**
 * One row of an entry list. Other columns of a CSV land in `meta`.
 *
 */
export interface Entry {
  /**
   * Racing number; an existing car with it (and the same class) is updated.
   */
  number?: string | null;
  /**
   * Default: `#<number> <driver or team>`.
   */
  label?: string | null;
  /**
   * Driver(s), as the list writes them (e.g. `A. Driver / B. Driver`).
   */
  driver?: string | null;
  team?: string | null;
  /**
   * The class the car races in (meta.class).
   */
  class?: string | null;
  /**
   * Car model (meta.car).
   */
  car?: string | null;
  /**
   * Livery colours (meta.colours).
   */
  colours?: string[] | null;
  meta?: {
    [k: string]: unknown | undefined;
  };
}
export interface EntriesImportResult {
  created: number;
  updated: number;
  /**
   * The cars of the imported rows, in their order.
   */
  cars: Car[];
  /**
   * Rows left out, and why; the others are imported.
   */
  problems: EntryProblem[];
}
export interface EntryProblem {
  /**
   * Index of the row (0 = the first after a CSV's header).
   */
  row: number;
  message: string;
}
/**
 * Why a vehicle got its decision.
 *
 */
export interface Evidence {
  /**
   * The signals that made the decision (empty for unknown, or ambiguous on a conflict).
   */
  decided_by: ('appearance' | 'number' | 'sequence' | 'words')[];
  appearance: AppearanceEvidence;
  /**
   * The number read on the vehicle: the surest naming an enrolled car, else the surest.
   */
  number?: NumberEvidence | null;
  /**
   * Why the signals disagree (the decision is then ambiguous).
   */
  conflict?: string | null;
  sequence?: SequenceEvidence | null;
  /**
   * Words read on the vehicle's livery (sponsors, names) that the references of cars appearance could not tell apart carry. They are read only where appearance ties cars within the margin and the numbers are read; the car with the most of them goes first, and is matched when it clears the threshold (decided by appearance and words).
   */
  words?: string[];
}
export interface NumberEvidence {
  /**
   * The racing number read, e.g. `7` or `24B`.
   */
  text: string;
  /**
   * Probability of its least sure character.
   */
  confidence: number;
  /**
   * [x1, y1, x2, y2] in original-image pixels
   *
   * @minItems 4
   * @maxItems 4
   */
  box: [number, number, number, number];
  /**
   * Enrolled cars carrying this number.
   */
  car_ids: string[];
}
/**
 * The burst this vehicle was shot in named its car (tag only).
 *
 */
export interface SequenceEvidence {
  car_id: string;
  /**
   * Photos of the burst in which this vehicle was followed.
   */
  frames: number;
  /**
   * Of them, those matched to the car on their own.
   */
  confident: number;
}
export interface ExportParams {
  format: 'csv' | 'json' | 'xmp';
  /**
   * csv/json: the file to write (default: export.<format> in the library).
   */
  output?: string | null;
  /**
   * xmp: replace .xmp files that already exist beside photos (default: skip them).
   */
  overwrite?: boolean;
}
export interface ExportResult {
  format: string;
  files: string[];
  skipped: string[];
  rows: number;
}
export interface IdentifiedVehicle {
  /**
   * [x1, y1, x2, y2] in original-image pixels
   *
   * @minItems 4
   * @maxItems 4
   */
  box: [number, number, number, number];
  detector_score: number;
  label: string;
  decision: 'ambiguous' | 'match' | 'unknown';
  car_id: string | null;
  /**
   * Appearance similarity of the decided car (match) or the best one (ambiguous); null when the number alone named the car.
   */
  score: number | null;
  candidates: Candidate[];
  evidence: Evidence;
}
export interface IdentifyParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  /**
   * Candidates reported per vehicle.
   */
  top_k?: number;
  /**
   * Read the racing number on each vehicle and fuse it with appearance (true; 10-150 ms a vehicle, with its size), only on vehicles appearance alone does not match ("unsure": faster, but a clear appearance match is not checked against the number), or on none (false). Where it reads, the livery's words are read too on vehicles whose appearance ties cars (`evidence.words`).
   */
  read_numbers?: boolean | 'unsure';
  /**
   * Lowest similarity for a match; default: the calibrated one.
   */
  threshold?: number | null;
  /**
   * Lead over the runner-up a match needs; default: the calibrated one.
   */
  margin?: number | null;
  /**
   * Lowest detector score considered; default: the detector's calibrated one, and where nothing reaches it, the best box from the detector's lower lone score, alone.
   */
  min_score?: number | null;
  /**
   * Also look for small, distant cars in a tiles x tiles grid of overlapping parts of the photo, each seen at the detector's full input size: tiles^2 + 1 detector runs a photo, and more false boxes; 2 finds the most (`python -m bench.tiling`). 1: the whole photo only.
   */
  tiles?: number;
  image: ImageRef;
}
export interface IdentifyResult {
  vehicles: IdentifiedVehicle[];
  width: number;
  height: number;
  /**
   * For a camera RAW (its embedded JPEG preview is what is analysed): sensor pixels per image pixel, so sensor coordinates are box x scale. Null for other images.
   */
  sensor_scale?: number | null;
}
export interface InitializeParams {
  client_name?: string | null;
  client_version?: string | null;
  protocol_version?: string | null;
  /**
   * Folder of the library to open (created if absent); needed by enroll, identify, tag and the rest.
   */
  library?: string | null;
}
export interface InitializeResult {
  server_name: string;
  server_version: string;
  protocol_version: string;
  models: ModelInfo[];
  capabilities: Capabilities;
  library?: LibraryInfo | null;
}
export interface ModelInfo {
  name: string;
  task: 'detect' | 'detect-text' | 'embed' | 'read-text';
  version: string;
  file: string;
  /**
   * The loaded file's; else the manifest's pin. A model the project trains is pinned per instruction set (its build differs on AVX-512 and AVX2 machines), so two machines can report two values; where the manifest pins none for the machine, `build.py models` records the machine's own build, which loads with a warning on stderr (the manifest's figures are the pinned build's).
   */
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
  /**
   * The library's own embedder (made by `adapt`): the shipped model it was fine-tuned from.
   */
  adapted_from?: string | null;
}
export interface LibraryInfo {
  path: string;
  cars: number;
  references: number;
  /**
   * The reference index was missing or stale and was rebuilt from the database.
   */
  index_rebuilt: boolean;
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
  /**
   * Items per second so far (tag: photos per second).
   */
  rate?: number | null;
  /**
   * Seconds left at that rate.
   */
  eta_s?: number | null;
}
export interface ReferenceIdParams {
  id: number;
}
export interface Removed {
  removed: string;
}
export interface ResultDetection {
  detection_id: number;
  photo_id: number;
  path: string;
  /**
   * [x1, y1, x2, y2] in original-image pixels
   *
   * @minItems 4
   * @maxItems 4
   */
  box: [number, number, number, number];
  detector_score: number;
  label: string;
  decision: 'ambiguous' | 'match' | 'unknown';
  car_id: string | null;
  score: number | null;
  candidates: Candidate[];
  review: ('confirmed' | 'rejected') | null;
  /**
   * For a camera RAW (its embedded JPEG preview is what is analysed): sensor pixels per image pixel, so sensor coordinates are box x scale. Null for other images.
   */
  sensor_scale?: number | null;
  /**
   * Null for photos tagged before numbers were fused.
   */
  evidence?: Evidence | null;
}
export interface ResultsQueryParams {
  car_id?: string | null;
  /**
   * Only vehicles on which this racing number was read.
   */
  number?: string | null;
  decision?: ('ambiguous' | 'match' | 'unknown') | null;
  min_score?: number | null;
  review?: ('confirmed' | 'pending' | 'rejected') | null;
  limit?: number;
  offset?: number;
}
export interface ResultsQueryResult {
  detections: ResultDetection[];
  total: number;
}
export interface ReviewParams {
  detection_id: number;
  /**
   * confirm: the right car (default: the matched one); reject: ignored.
   */
  car_id?: string | null;
  /**
   * confirm: also enroll this crop as a reference of the car.
   */
  add_as_reference?: boolean;
}
export interface ReviewResult {
  detection: ResultDetection;
  reference?: Reference | null;
}
export interface TagParams {
  /**
   * Send `$/progress` notifications for this request.
   */
  progress?: boolean;
  /**
   * Candidates reported per vehicle.
   */
  top_k?: number;
  /**
   * Read the racing number on each vehicle and fuse it with appearance (true; 10-150 ms a vehicle, with its size), only on vehicles appearance alone does not match ("unsure": faster, but a clear appearance match is not checked against the number), or on none (false). Where it reads, the livery's words are read too on vehicles whose appearance ties cars (`evidence.words`).
   */
  read_numbers?: boolean | 'unsure';
  /**
   * Lowest similarity for a match; default: the calibrated one.
   */
  threshold?: number | null;
  /**
   * Lead over the runner-up a match needs; default: the calibrated one.
   */
  margin?: number | null;
  /**
   * Lowest detector score considered; default: the detector's calibrated one, and where nothing reaches it, the best box from the detector's lower lone score, alone.
   */
  min_score?: number | null;
  /**
   * Also look for small, distant cars in a tiles x tiles grid of overlapping parts of the photo, each seen at the detector's full input size: tiles^2 + 1 detector runs a photo, and more false boxes; 2 finds the most (`python -m bench.tiling`). 1: the whole photo only.
   */
  tiles?: number;
  /**
   * Paths of photos and folders (folders are walked).
   *
   * @minItems 1
   */
  images: [string, ...string[]];
  recursive?: boolean;
  /**
   * Tag again photos already tagged with the same models and settings (min_score, tiles, read_numbers, threshold, margin). A photo tagged again, with these or others, has its result replaced; the user's reviews move to the new detections of the same vehicles.
   */
  rescan?: boolean;
  /**
   * Photos of one camera (EXIF body serial, else make and model) taken at most this many seconds apart form a burst, whose confident frames name the car in the others; 0 turns bursts off.
   */
  sequence_gap_s?: number;
}
export interface TagResult {
  total: number;
  tagged: number;
  /**
   * Already tagged with the same models and settings (same content hash).
   */
  skipped: number;
  /**
   * Of `tagged`, photos whose earlier result (with other models or settings, or `rescan`) this run replaced.
   */
  replaced: number;
  failed: TagFailure[];
  matched: number;
  ambiguous: number;
  unknown: number;
  /**
   * Vehicles whose racing number was read.
   */
  numbers: number;
  /**
   * Vehicles that only their burst named (counted in `matched`).
   */
  by_sequence: number;
  /**
   * Wall time of the run.
   */
  seconds: number;
  /**
   * Seconds per stage (read, decode, detect, embed, match, number, store, bursts), summed over threads: photos are decoded ahead while the models run, so the stages add up to more than `seconds`.
   */
  stage_seconds: {
    [k: string]: number | undefined;
  };
}

/** Every request method: its params and result types. */
export interface Methods {
  'initialize': { params: InitializeParams; result: InitializeResult };
  'ping': { params: null; result: PingResult };
  'shutdown': { params: null; result: null };
  '$/cancelRequest': { params: CancelParams; result: null };
  'detect': { params: DetectParams; result: DetectResult };
  'embed': { params: EmbedParams; result: EmbedResult };
  'embedder.use': { params: EmbedderUseParams; result: EmbedderUseResult };
  'enroll': { params: EnrollParams; result: EnrollResult };
  'entries.import': { params: EntriesImportParams; result: EntriesImportResult };
  'cars.update': { params: CarUpdateParams; result: Car };
  'cars.remove': { params: CarIdParams; result: Removed };
  'cars.merge': { params: CarsMergeParams; result: Car };
  'references.remove': { params: ReferenceIdParams; result: Removed };
  'cars.list': { params: null; result: CarsListResult };
  'cars.get': { params: CarIdParams; result: CarDetail };
  'identify': { params: IdentifyParams; result: IdentifyResult };
  'tag': { params: TagParams; result: TagResult };
  'results.query': { params: ResultsQueryParams; result: ResultsQueryResult };
  'results.confirm': { params: ReviewParams; result: ReviewResult };
  'results.reject': { params: ReviewParams; result: ReviewResult };
  'export': { params: ExportParams; result: ExportResult };
  'adapt': { params: AdaptParams; result: AdaptResult };
  'adapt.revert': { params: null; result: AdaptRevertResult };
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
  LibraryInUse: -32005,
  LibraryNotOpen: -32006,
  NotFound: -32007,
  TrainingUnavailable: -32008,
  LibraryTooNew: -32009,
  RequestCancelled: -32800,
} as const;
