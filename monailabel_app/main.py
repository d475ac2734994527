"""MONAI Label app serving this bundle to 3D Slicer: the model pre-segments a scan, a person corrects it and submits
the label, and training fine-tunes the weights on every submitted label (the labelling loop).

    monailabel start_server --app monailabel_app --studies /path/to/scans

The app runs MONAI Label's own bundle tasks on a working copy of the bundle (configs, scripts, weights), by default
in ``monailabel_app/model/lumbar_muscle_dixon_segmentation`` (``--conf bundle_copy DIR`` to put it elsewhere). Its
configs and scripts are refreshed from the repository at every start; its weights are the shipped ones until the
first training, then the fine-tuned ones (delete ``models/model.pt`` there to start again from the shipped weights
and their card, ``models/model.json``).
What differs from ``monai.bundle run inference``/``training`` is said where it happens below.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Callable, Sequence

import nibabel
import numpy
from fastapi import HTTPException
from monai.bundle import ConfigParser
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

logger = logging.getLogger(__name__)

MODEL = "lumbar_muscle_dixon_segmentation"  # the name Slicer shows; "segmentation" in it sets the task type
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Fine-tuning from submitted labels: the bundle's own fine-tuning recipe, which starts from models/model.pt.
TRAIN_CONFIGS = ("train.yaml", "finetune.yaml")
# The weights and their model card beside them (scripts/model_card.py), which inference and fine-tuning read.
MODEL_FILES = ("model.pt", "model.json")


def refresh_bundle_copy(source: str, copy: str) -> str:
    """Copy the bundle's configs and scripts from ``source`` to ``copy``, and its weights with their card only if
    ``copy`` has no weights."""
    for folder in ("configs", "scripts"):
        shutil.copytree(
            os.path.join(source, folder),
            os.path.join(copy, folder),
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    weights = os.path.join(copy, "models", MODEL_FILES[0])
    if not os.path.exists(weights):
        os.makedirs(os.path.dirname(weights), exist_ok=True)
        for name in reversed(MODEL_FILES):  # the card first: weights in place always have theirs
            shutil.copy2(os.path.join(source, "models", name), os.path.join(copy, "models", name))
    logger.info(f"Bundle working copy: {copy}; weights {weights} (delete them to start again from the shipped ones)")
    return copy


def read_bundle(path: str, config_files: Sequence[str], **settings: Any) -> ConfigParser:
    """The bundle's configs merged in order, with ``metadata.json`` as ``_meta_`` (the label names are read from
    there), rooted at ``path``, with ``settings`` (config keys) set; MONAI Label's own reader leaves ``_meta_``
    out."""
    parser = ConfigParser()
    parser.read_config([os.path.join(path, "configs", name) for name in config_files])
    parser.read_meta(os.path.join(path, "configs", "metadata.json"))
    parser["bundle_root"] = path
    for key, value in settings.items():
        parser[key] = value
    return parser


def training_entry(entry: dict[str, str], muscles: Sequence[int]) -> dict[str, Any] | None:
    """A submitted label (``image`` and ``label`` paths) as an entry of the bundle's training datalist: its ``id``
    from the label's file name, and ``annotated`` listing the muscles drawn in it when not all of them are (the
    partial-label loss then leaves the others out instead of teaching them as background). None when it holds no
    muscle at all."""
    values = numpy.unique(numpy.asarray(nibabel.load(entry["label"]).dataobj))
    drawn = [m for m in muscles if m in values]
    if not drawn:
        return None
    case_id = os.path.splitext(os.path.basename(entry["label"]).removesuffix(".gz"))[0]
    return {"id": case_id, **entry} | ({} if len(drawn) == len(muscles) else {"annotated": drawn})


def is_input_error(error: BaseException) -> bool:
    """Whether ``error`` is the bundle's ``InputError`` (a problem of the user's files). Told by name: MONAI Label
    imports the bundle's scripts anew for every request, so the class object is not a fixed one."""
    return any(cls.__name__ == "InputError" for cls in type(error).__mro__)


class LumbarMuscleInferTask(BundleInferTask):
    """MONAI Label's bundle inference on ``configs/inference.yaml``, giving the label of ``monai.bundle run
    inference`` (same preprocessing, inferer with flip averaging, largest pieces, on the scan's own grid).

    The in-phase image is the study's image; MONAI Label's image loader wrapper is left out, as it expects every key
    of the bundle's loader (in-phase, out-of-phase, water, fat) in the request. An unusable scan is answered with
    HTTP 422 and the bundle's message (e.g. "image .../blank.nii.gz is all zero").
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, extend_load_image=False, load_strict=True)

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> tuple[Any, dict]:
        try:
            return super().__call__(request, callbacks)
        except Exception as error:
            if is_input_error(error):  # the scan's problem, said to the client instead of "Internal Server Error"
                raise HTTPException(status_code=422, detail=str(error)) from error
            raise

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        # The server returns the label only: inference's steps that name and write the files of a case (segmentation,
        # muscle report, QC picture) are switched off.
        return read_bundle(path, [os.path.basename(config)], case_outputs=False)

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        # MONAI's Spacingd copies a NIfTI image's metadata into every "image_*" entry of the case, and fails on
        # MONAI Label's "image_path" (a string): it is set aside while preprocessing runs (the writer needs it).
        path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        data["image_path"] = path
        return data


class LumbarMuscleTrainTask(BundleTrainTask):
    """MONAI Label's bundle training on ``train.yaml`` + ``finetune.yaml``: fine-tunes the working copy's weights on
    the submitted labels and writes the best epoch back there, where inference picks it up.

    Partially drawn scans are accepted: muscles missing from a label are left out of its loss (``training_entry``).
    With too few labels for a validation split, validation runs on the training labels.
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, load_strict=True)
        # What MONAI Label's training run (monai.bundle.run) reads: the same files, merged.
        self.bundle_config_path = [os.path.join(path, "configs", name) for name in TRAIN_CONFIGS]

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        return read_bundle(path, TRAIN_CONFIGS)

    def config(self) -> dict[str, Any]:
        options = super().config()
        options.pop("pretrained")  # always fine-tuned: finetune.yaml loads the weights
        return options

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        """Nothing: finetune.yaml loads ``models/model.pt`` (strictly) before training."""

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        channels = self.bundle_config["_meta_"]["network_data_format"]["outputs"]["pred"]["channel_def"]
        muscles = [int(k) for k in channels if int(k)]
        entries = []
        for entry in super()._fetch_datalist(request, datastore):
            kept = training_entry(entry, muscles)
            if kept is None:
                logger.warning(f"Label {entry['label']} holds no muscle: left out of training")
            else:
                entries.append(kept)
        return entries

    def _partition_datalist(self, datalist: list, request: dict[str, Any], shuffle: bool = False) -> tuple:
        train, validation = super()._partition_datalist(datalist, request, shuffle)
        if not validation:
            logger.info("Too few labels for a validation split: validating on the training labels")
            validation = train
        return train, validation

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        overrides["ckpt_dir"] = os.path.join(self.bundle_path, "models")  # where the inference task reads weights
        return overrides


class LumbarMuscleApp(MONAILabelApp):
    """One model, ``lumbar_muscle_dixon_segmentation``, for inference and training, on the studies' datastore."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        copy = conf.get("bundle_copy", os.path.join(app_dir, "model", MODEL))
        self.bundle = refresh_bundle_copy(REPOSITORY, os.path.abspath(copy))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Lumbar muscles (Dixon MRI)",
            description="Left/right psoas, iliacus, quadratus lumborum and erector spinae + multifidus",
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {MODEL: LumbarMuscleInferTask(self.bundle, self.conf)}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {MODEL: LumbarMuscleTrainTask(self.bundle, self.conf)}
