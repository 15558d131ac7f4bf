"""`python3 build.py import-reid`: checkpoints shaped as torchreid and
FastReID save them (randomly initialised networks defined in
sidecar/training/architectures.py, with the projects' parameter names) are
exported, registered and served; the sidecar's vectors equal the torch
network's on the same pixels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import build  # noqa: E402
from sidecar.inference.manifest import InputSpec  # noqa: E402
from sidecar.stages.preprocess import to_tensor  # noqa: E402
from sidecar.training.architectures import ARCHITECTURES  # noqa: E402
from tests.sidecar_process import SidecarProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FASTREID_MEAN, FASTREID_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def random_network(arch: str, seed: int) -> torch.nn.Module:
    """The architecture with random weights and batch-norm statistics (so eval mode is not an identity)."""
    torch.manual_seed(seed)
    network = ARCHITECTURES[arch]({})
    for module in network.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return network.eval()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(build.MODELS / "manifest.json", folder)
    for model in build.MODELS.glob("*.onnx"):
        (folder / model.name).symlink_to(model)
    return folder


def import_reid(models_dir: Path, checkpoint: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "build.py"), "import-reid", str(checkpoint), "--models", str(models_dir),
                           *args], cwd=ROOT, capture_output=True, text=True)


def crop_image(path: Path) -> np.ndarray:
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.integers(0, 255, (300, 180, 3), dtype=np.uint8), (7, 7), 0)
    cv2.imwrite(str(path), image)
    return image


def served_vector(models_dir: Path, name: str, image: Path) -> np.ndarray:
    process = SidecarProcess("json", extra_args=["--embedder", name], env={"LIVERYID_MODELS_DIR": str(models_dir)})
    try:
        models = process.request("initialize", {}, id=1)["result"]["models"]
        embedder = next(m for m in models if m["task"] == "embed")
        assert (embedder["name"], embedder["status"]) == (name, "loaded")
        result = process.request("embed", {"image": {"path": str(image)}}, id=2)["result"]
    finally:
        process.kill()
    assert result["model"] == name and result["dim"] == embedder["output_dim"]
    return np.asarray(result["vector"], np.float32)


def expected_vector(network: torch.nn.Module, image: np.ndarray, spec: InputSpec) -> np.ndarray:
    resized = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        vector = network(torch.from_numpy(to_tensor([resized], spec)))[0].numpy()
    return vector / np.linalg.norm(vector)


@pytest.mark.parametrize("arch", ["osnet_x0_25", "osnet_ain_x1_0"])
def test_a_torchreid_osnet_checkpoint_is_served_as_torch_computes_it(models_dir: Path, tmp_path: Path, arch: str) -> None:
    network = random_network(arch, seed=1)
    weights = {f"module.{k}": v for k, v in network.state_dict().items()}
    weights["module.classifier.weight"] = torch.randn(751, 512)  # trained for 751 identities: not needed to embed
    checkpoint = tmp_path / f"{arch}_veri.pth.tar"
    torch.save({"state_dict": weights, "epoch": 60, "rank1": 0.9}, checkpoint)
    if arch == "osnet_ain_x1_0":  # OSNet-AIN names its layers otherwise: an OSNet checkpoint is refused
        wrong = import_reid(models_dir, checkpoint, "--arch", "osnet_x1_0", "--name", "wrong")
        assert wrong.returncode != 0 and "not a osnet_x1_0" in wrong.stderr
    imported = import_reid(models_dir, checkpoint, "--arch", arch, "--name", "osnet-test", "--input", "256x128")
    assert imported.returncode == 0, imported.stderr
    entry = next(m for m in json.loads((models_dir / "manifest.json").read_text())["models"] if m["name"] == "osnet-test")
    assert (entry["output_dim"], entry["input"]["height"], entry["input"]["width"]) == (512, 256, 128)
    assert entry["input"]["mean"] == [0.485, 0.456, 0.406] and entry["build"].startswith("python3 build.py import-reid")
    image = crop_image(tmp_path / "crop.png")
    spec = InputSpec(**{k: v for k, v in entry["input"].items()})
    np.testing.assert_allclose(served_vector(models_dir, "osnet-test", tmp_path / "crop.png"),
                               expected_vector(network, image, spec), atol=1e-4)


def test_a_fastreid_stronger_baseline_checkpoint_keeps_its_own_normalisation(models_dir: Path, tmp_path: Path) -> None:
    network = random_network("fastreid-sbs-r50-ibn", seed=2)
    weights = dict(network.state_dict())
    weights["heads.weight"] = torch.randn(576, 2048)  # VeRi-776's training identities
    weights["pixel_mean"] = torch.tensor(FASTREID_MEAN).view(1, 3, 1, 1)
    weights["pixel_std"] = torch.tensor(FASTREID_STD).view(1, 3, 1, 1)
    checkpoint = tmp_path / "veri_sbs_R50-ibn.pth"
    torch.save({"model": weights, "iteration": 1000}, checkpoint)

    wrong = import_reid(models_dir, checkpoint, "--arch", "fastreid-bot-r50-ibn", "--name", "wrong")
    assert wrong.returncode != 0 and "not a fastreid-bot-r50-ibn" in wrong.stderr and "NL_2" in wrong.stderr

    imported = import_reid(models_dir, checkpoint, "--arch", "fastreid-sbs-r50-ibn", "--name", "sbs-test", "--input", "256x256")
    assert imported.returncode == 0, imported.stderr
    entry = next(m for m in json.loads((models_dir / "manifest.json").read_text())["models"] if m["name"] == "sbs-test")
    assert entry["input"]["scale"] == 1.0 and entry["input"]["mean"] == pytest.approx(FASTREID_MEAN)
    assert entry["output_dim"] == 2048 and not any(m["name"] == "wrong" for m in json.loads((models_dir / "manifest.json").read_text())["models"])
    image = crop_image(tmp_path / "crop.png")
    spec = InputSpec(**entry["input"])
    np.testing.assert_allclose(served_vector(models_dir, "sbs-test", tmp_path / "crop.png"),
                               expected_vector(network, image, spec), atol=1e-4)


def test_an_onnx_file_is_registered_as_it_is(models_dir: Path, tmp_path: Path) -> None:
    network = random_network("osnet_x0_25", seed=3)
    exported = tmp_path / "mine.onnx"
    torch.onnx.export(network, (torch.zeros(1, 3, 192, 96),), str(exported), input_names=["input"], output_names=["feat"],
                      dynamic_axes={"input": {0: "n"}, "feat": {0: "n"}}, opset_version=17, dynamo=False)
    imported = import_reid(models_dir, exported, "--name", "onnx-test")
    assert imported.returncode == 0, imported.stderr
    entry = next(m for m in json.loads((models_dir / "manifest.json").read_text())["models"] if m["name"] == "onnx-test")
    assert (entry["input"]["name"], entry["output"], entry["input"]["height"], entry["input"]["width"]) == ("input", "feat", 192, 96)
    image = crop_image(tmp_path / "crop.png")
    np.testing.assert_allclose(served_vector(models_dir, "onnx-test", tmp_path / "crop.png"),
                               expected_vector(network, image, InputSpec(**entry["input"])), atol=1e-4)
