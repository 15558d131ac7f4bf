from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from sidecar.config import settings_from_env
from sidecar.errors import ModelMissing
from sidecar.inference.manifest import load_manifest, verified_path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def test_every_default_model_is_built_and_matches_its_pinned_sha256() -> None:
    manifest = load_manifest(MODELS)
    assert {m.name for m in manifest.models} == {
        "nanodet-m-coco", "liveryid-vehicle-nanodet", "mobilenetv2-imagenet", "liveryid-reid-mnv2",
        "ppocr-v6-det-small", "ppocr-v6-rec-small"}
    for model in manifest.models:
        assert verified_path(model, MODELS).is_file()


def test_a_missing_manifest_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="no model manifest"):
        load_manifest(tmp_path)


def test_a_changed_model_file_is_refused_with_the_build_command(tmp_path: Path) -> None:
    shutil.copy(MODELS / "manifest.json", tmp_path)
    spec = load_manifest(tmp_path).get("nanodet-m-coco")
    with pytest.raises(ModelMissing, match="does not exist") as missing:
        verified_path(spec, tmp_path)
    assert missing.value.data["build"].startswith("python3 build.py models")
    data = bytearray((MODELS / spec.file).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / spec.file).write_bytes(bytes(data))
    with pytest.raises(ModelMissing, match="sha256") as mismatch:
        verified_path(spec, tmp_path)
    assert mismatch.value.data["reason"] == "checksum_mismatch"


def test_a_trained_model_rebuilt_on_other_vector_instructions_is_accepted_by_its_own_pin(tmp_path: Path) -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    entry = next(m for m in manifest["models"] if m["name"] == "liveryid-reid-mnv2")
    data = bytearray((MODELS / entry["file"]).read_bytes())
    data[-1] ^= 0xFF  # stands for the same recipe's bytes as rounded by another CPU
    (tmp_path / entry["file"]).write_bytes(bytes(data))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelMissing, match="sha256"):
        verified_path(load_manifest(tmp_path).get(entry["name"]), tmp_path)
    entry["rebuilt"] = {"x86_64 AVX-512": hashlib.sha256(bytes(data)).hexdigest()}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert verified_path(load_manifest(tmp_path).get(entry["name"]), tmp_path).is_file()


def test_a_trained_model_built_where_none_is_pinned_is_used_once_the_build_recorded_it(tmp_path: Path) -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    entry = next(m for m in manifest["models"] if m["name"] == "liveryid-vehicle-nanodet")
    data = bytearray((MODELS / entry["file"]).read_bytes())
    data[-1] ^= 0xFF  # stands for the recipe's bytes as rounded by a CPU the manifest has no pin for
    (tmp_path / entry["file"]).write_bytes(bytes(data))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    spec = load_manifest(tmp_path).get(entry["name"])
    record = {"sha256": hashlib.sha256(bytes(data)).hexdigest(), "built_on": "aarch64"}
    # Recorded against another version of the model (an older manifest entry): refused.
    (tmp_path / "local-builds.json").write_text(json.dumps({entry["name"]: {**record, "manifest_sha256": "older"}}))
    with pytest.raises(ModelMissing, match="sha256"):
        verified_path(spec, tmp_path)
    (tmp_path / "local-builds.json").write_text(json.dumps({entry["name"]: {**record, "manifest_sha256": spec.sha256}}))
    assert verified_path(spec, tmp_path).is_file()
    (tmp_path / entry["file"]).write_bytes(bytes(data[:-1]))  # changed since it was built: refused again
    with pytest.raises(ModelMissing, match="sha256"):
        verified_path(spec, tmp_path)


def test_the_build_keeps_and_records_a_trained_model_built_where_none_is_pinned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("build", None)
    import build

    monkeypatch.setattr(build, "MODELS", tmp_path)
    monkeypatch.setattr(build, "LOCAL_BUILDS", tmp_path / "local-builds.json")
    (tmp_path / "head.onnx").write_bytes(b"built on aarch64")
    built = hashlib.sha256(b"built on aarch64").hexdigest()
    trained = {"name": "head", "file": "head.onnx", "sha256": "a", "training": {"built_on": "x86_64 AVX2"}}
    pinned = {"x86_64 AVX2"}
    assert not build.is_built(trained, "aarch64", pinned)
    build.record_local_build(trained, built, "aarch64")
    assert build.is_built(trained, "aarch64", pinned)
    assert not build.is_built(trained, "x86_64 AVX2", pinned)  # pinned there: only the pin will do
    assert not build.is_built({**trained, "sha256": "b"}, "aarch64", pinned)  # a new version of the model: build it again
    (tmp_path / "head.onnx").unlink()
    assert not build.is_built(trained, "aarch64", pinned)


def test_the_build_expects_the_pin_of_the_machines_instruction_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("build", None)
    import build

    trained = {"name": "liveryid-reid-mnv2", "sha256": "a", "rebuilt": {"x86_64 AVX-512": "b"},
               "training": {"built_on": "x86_64 AVX2"}}
    pinned = build.pinned_machines({"models": [trained]})
    assert pinned == {"x86_64 AVX2", "x86_64 AVX-512"}
    assert build.expected_sha256(trained, "x86_64 AVX2", pinned) == "a"
    assert build.expected_sha256(trained, "x86_64 AVX-512", pinned) == "b"
    assert build.expected_sha256(trained, "aarch64", pinned) is None  # not pinned there: the build records its own
    converted = {"name": "nanodet-m-coco", "sha256": "c"}
    assert build.expected_sha256(converted, "aarch64", pinned) == "c"  # converted without torch: the same bytes anywhere
    exported = {"name": "mobilenetv2-imagenet", "sha256": "d"}  # exported by torch: pinned where the trained ones are
    assert build.expected_sha256(exported, "x86_64 AVX-512", pinned) == "d"
    assert build.expected_sha256(exported, "x86_64 AVX-512 AMX", pinned) is None
    # Pinned on one more instruction set, where torch's export rounds otherwise: each its own bytes.
    trained["rebuilt"]["x86_64 AVX-512 AMX"] = "e"
    exported["rebuilt"] = {"x86_64 AVX-512 AMX": "f"}
    pinned = build.pinned_machines({"models": [trained, exported]})
    assert build.expected_sha256(trained, "x86_64 AVX-512 AMX", pinned) == "e"
    assert build.expected_sha256(exported, "x86_64 AVX-512 AMX", pinned) == "f"
    assert build.expected_sha256(exported, "x86_64 AVX-512", pinned) == "d"
    assert build.instruction_set().split()[0] in {"x86_64", "aarch64", "arm64", "AMD64"}


def test_unknown_model_names_are_refused() -> None:
    with pytest.raises(ModelMissing, match="not in the manifest"):
        load_manifest(MODELS).get("yolo-from-nowhere")


def test_settings_come_from_the_environment_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVERYID_WORKERS", "3")
    monkeypatch.setenv("LIVERYID_MODELS_DIR", "/somewhere")
    settings = settings_from_env(workers=None)
    assert settings.workers == 3 and settings.models_dir == Path("/somewhere")
    assert settings_from_env(workers=1).workers == 1


def test_the_generic_export_is_pinned_wherever_a_trained_model_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Else `build.py models` on such a machine fails on the export the trained embedder starts from
    (a trained model itself may lack a pin somewhere: that build is kept and recorded)."""
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("build", None)
    import build

    manifest = json.loads((MODELS / "manifest.json").read_text())
    pinned = build.pinned_machines(manifest)
    exported = [m for m in manifest["models"] if m["name"] in build.TORCH_BUILT - set(build.TRAINED_MODELS)]
    unpinned = {(m["name"], kind) for m in exported for kind in pinned if build.expected_sha256(m, kind, pinned) is None}
    assert pinned and exported and not unpinned
