"""The MONAI Label app (monailabel_app/) in the real MONAI Label server, on 127.0.0.1: ``/infer`` gives the label of
``monai.bundle run inference``; labels submitted through ``/datastore/label`` (one drawn for two muscles only)
fine-tune the shipped weights through ``/train``, and ``/infer`` then uses the fine-tuned weights.

Needs the optional extra (requirements-monailabel.txt); skipped where MONAI Label is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, TUM02, free_port, infer, read_csv, save_reoriented, write_datalist

from scripts.model_card import SHA256_KEY, load_weights, read_model

pytest.importorskip("monailabel")
requests = pytest.importorskip("requests")

MODEL = "lumbar_muscle_dixon_segmentation"
SAMPLE = REPO / "sample" / "sub01"
SHIPPED = REPO / "models" / "model.pt"
# The sample as given, and the same scan stored in another voxel order (the server must restore it).
STUDIES = {"sub01": None, "sub01_pls": ("P", "L", "S")}
PARTIAL = [4, 8]  # sub01_pls is submitted with erector spinae + multifidus only


def reoriented_copy(source: Path, axcodes: tuple[str, ...] | None, target: Path, keep: list[int] | None = None) -> Path:
    """``source`` stored in voxel order ``axcodes`` (as is when None), keeping only labels ``keep`` if given."""
    image = nib.load(source)
    array = np.asarray(image.dataobj)
    if keep is not None:
        array = np.where(np.isin(array, keep), array, 0).astype(np.uint8)
    if axcodes is None:
        nib.save(nib.Nifti1Image(array, image.affine), target)
        return target
    return save_reoriented(array, image.affine, axcodes, target)


class Server:
    """``monailabel start_server`` with the app, in its own process group; the test session stops it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.studies = root / "studies"
        self.bundle = root / "bundle"  # the app's working copy of the bundle
        self.studies.mkdir()
        for study, axcodes in STUDIES.items():
            reoriented_copy(SAMPLE / "inphase.nii.gz", axcodes, self.studies / f"{study}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros((20, 20, 10), np.float32), np.eye(4)), self.studies / "blank.nii.gz")
        if TUM02.is_dir():  # a real scan, as a lab would bring it: in-phase = water + fat, in the fat image's header
            fat = nib.load(TUM02 / "fat.nii.gz")
            inphase = np.asarray(nib.load(TUM02 / "water.nii.gz").dataobj, np.float32) + fat.get_fdata(dtype=np.float32)
            nib.save(nib.Nifti1Image(inphase, fat.affine, fat.header), self.studies / "TUM02.nii.gz")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = root / "server.log"
        command = [
            sys.executable, "-m", "monailabel.main", "start_server",
            "--app", str(REPO / "monailabel_app"),
            "--studies", str(self.studies),
            "--conf", "bundle_copy", str(self.bundle),
            "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
        ]  # fmt: skip
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_until_up(timeout=300)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise AssertionError(f"the server did not answer within {timeout} s:\n{self.log_tail()}")

    def request_label(self, study: str, params: dict | None = None) -> requests.Response:
        return requests.post(
            f"{self.url}/infer/{MODEL}",
            params={"image": study, "output": "image"},
            data={"params": json.dumps(params or {})},
            timeout=300,
        )

    def infer(self, study: str, target: Path, params: dict | None = None) -> Path:
        reply = self.request_label(study, params)
        assert reply.status_code == 200, f"{reply.text}\n{self.log_tail()}"
        target.write_bytes(reply.content)
        return target

    def train(self, **params: int) -> None:
        """``/train`` for our model, waited for; it must end well."""
        reply = requests.post(f"{self.url}/train/{MODEL}", json=params, timeout=60)
        assert reply.status_code == 200, reply.text
        deadline = time.monotonic() + 900
        while (status := requests.get(f"{self.url}/train/", timeout=60).json())["status"] in ("SUBMITTED", "RUNNING"):
            assert time.monotonic() < deadline, "training did not finish in 15 minutes"
            time.sleep(2)
        assert status["status"] == "DONE", "\n".join(status.get("details", [])) + self.log_tail()

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and the training processes it started
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    running = Server(tmp_path_factory.mktemp("monailabel"))
    yield running
    running.stop()
    assert running.process.poll() is not None


def bundle_labels(server: Server, ckpt: Path, output: Path, studies: tuple[str, ...] = tuple(STUDIES)) -> dict:
    """``monai.bundle run inference`` on the server's ``studies`` with the weights ``ckpt``: label images by study."""
    datalist = write_datalist(
        output.parent / f"{output.name}_datalist.json",
        {"testing": [{"id": s, "image": str(server.studies / f"{s}.nii.gz")} for s in studies]},
    )
    infer(server.studies, output, ckpt, "--datalist", str(datalist))
    return {s: nib.load(output / s / f"{s}_seg.nii.gz") for s in studies}


def assert_same_label(served: nib.Nifti1Image, reference: nib.Nifti1Image) -> None:
    assert served.shape == reference.shape
    np.testing.assert_allclose(served.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(served.dataobj), np.asarray(reference.dataobj))


def test_infer_gives_the_label_of_bundle_inference(server: Server, tmp_path: Path) -> None:
    reference = bundle_labels(server, SHIPPED, tmp_path / "bundle")
    for study in STUDIES:
        served = nib.load(server.infer(study, tmp_path / f"{study}_served.nii.gz"))
        assert_same_label(served, reference[study])
        assert set(np.unique(np.asarray(served.dataobj))) == set(range(9)), "every muscle found on the sample"
    # Written as NRRD on request (a format 3D Slicer reads), the same voxels in the same place.
    nrrd = sitk.ReadImage(str(server.infer("sub01_pls", tmp_path / "served.nrrd", {"result_extension": ".nrrd"})))
    nifti = sitk.ReadImage(str(tmp_path / "bundle" / "sub01_pls" / "sub01_pls_seg.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nrrd), sitk.GetArrayFromImage(nifti))
    for geometry in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(nrrd, geometry)(), getattr(nifti, geometry)(), atol=1e-4)
    # Only the label comes back: the muscle report of `monai.bundle run inference` is not written by the server.
    assert not list(server.root.rglob("*_metrics.json"))


def test_an_unusable_scan_is_refused_with_its_reason(server: Server) -> None:
    reply = server.request_label("blank")
    assert reply.status_code == 422
    assert reply.json()["detail"] == (
        f"image {server.studies / 'blank.nii.gz'} is all zero: there is no anatomy to segment in it; check that this"
        " is the scan you meant to give"
    )


@pytest.mark.skipif(not TUM02.is_dir(), reason="real data ../shared/data/TUM02 not present")
def test_infer_on_a_real_scan(server: Server, tmp_path: Path) -> None:
    """TUM02 (400 x 400 x 29, LPS, 1.02 x 1.02 x 4 mm, qform only): the served label is bundle inference's."""
    reference = bundle_labels(server, SHIPPED, tmp_path / "bundle", ("TUM02",))["TUM02"]
    served = nib.load(server.infer("TUM02", tmp_path / "served.nii.gz"))
    assert_same_label(served, reference)
    assert {4, 8} <= set(np.unique(np.asarray(served.dataobj))), "erector spinae + multifidus found on both sides"


def relative_change(weights: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> float:
    moved = sum(float((weights[k].float() - start[k].float()).pow(2).sum()) for k in start)
    return (moved / sum(float(v.float().pow(2).sum()) for v in start.values())) ** 0.5


def test_submitted_labels_finetune_the_shipped_weights(server: Server, tmp_path: Path) -> None:
    labels = {
        "sub01": reoriented_copy(SAMPLE / "label.nii.gz", STUDIES["sub01"], tmp_path / "sub01.nii.gz"),
        "sub01_pls": reoriented_copy(SAMPLE / "label.nii.gz", STUDIES["sub01_pls"], tmp_path / "pls.nii.gz", PARTIAL),
    }
    for study, label in labels.items():
        with label.open("rb") as f:
            reply = requests.put(
                f"{server.url}/datastore/label", params={"image": study, "tag": "final"}, files={"label": f}, timeout=60
            )
        assert reply.status_code == 200, reply.text
    stored = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=60).json()["objects"]
    assert all("final" in stored[study]["labels"] for study in labels)

    server.train(max_epochs=1)

    # Fine-tuned from the shipped weights (one epoch moves them a little; a new start would be far from them),
    # written to the app's working copy, where inference reads them.
    finetuned = server.bundle / "models" / "model.pt"
    weights, card = read_model(finetuned)
    shipped = load_weights(SHIPPED)
    # The voxel size and network they were trained with go on (in the card beside them: no sha256 of other weights).
    assert {k: v for k, v in card.items() if k != SHA256_KEY} == {
        k: v for k, v in read_model(SHIPPED)[1].items() if k != SHA256_KEY
    }
    change = relative_change(weights, shipped)
    assert 0 < change < 0.05, change
    # The partly drawn scan trained on its two muscles only: validation scored nothing else on it.
    scored = {row["id"]: row for row in read_csv(server.bundle / "runs" / "dice_per_case.csv")}
    assert [name for name, dice in scored["sub01_pls"].items() if name not in ("epoch", "id") and dice] == [
        "LES+M",
        "RES+M",
    ]
    assert all(scored["sub01"][name] for name in scored["sub01"])

    reference = bundle_labels(server, finetuned, tmp_path / "bundle")
    assert_same_label(nib.load(server.infer("sub01", tmp_path / "served.nii.gz")), reference["sub01"])

    # The loop goes on: a second round starts from the weights of the first, so it ends further from the shipped
    # ones (a new start from them, on the same labels with the same seed, would end where the first round did).
    server.train(max_epochs=1)
    again = load_weights(finetuned)
    print(
        f"relative change from the shipped weights: {change:.2e} after one round, "
        f"{relative_change(again, shipped):.2e} after two"
    )
    assert relative_change(again, shipped) > change > 0, (relative_change(again, shipped), change)


def test_training_entries_of_submitted_labels(tmp_path: Path) -> None:
    """A label's drawn muscles become its ``annotated`` list; a label with no muscle is not a training case."""
    sys.path.insert(0, str(REPO / "monailabel_app"))
    try:
        from main import training_entry
    finally:
        sys.path.remove(str(REPO / "monailabel_app"))
    muscles = list(range(1, 9))
    full = reoriented_copy(SAMPLE / "label.nii.gz", None, tmp_path / "full.nii.gz")
    partial = reoriented_copy(SAMPLE / "label.nii.gz", None, tmp_path / "partial.nii.gz", PARTIAL)
    empty = reoriented_copy(SAMPLE / "label.nii.gz", None, tmp_path / "empty.nii.gz", [])
    assert training_entry({"image": "i.nii.gz", "label": str(full)}, muscles) == {
        "id": "full",
        "image": "i.nii.gz",
        "label": str(full),
    }
    assert training_entry({"image": "i.nii.gz", "label": str(partial)}, muscles)["annotated"] == PARTIAL
    assert training_entry({"image": "i.nii.gz", "label": str(empty)}, muscles) is None
