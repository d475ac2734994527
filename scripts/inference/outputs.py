"""Name every output of a case after its datalist id: ``O/<id>/<id>_seg.nii.gz`` and so on."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, SaveImaged

from scripts.atomic import write_atomically


class CaseIdToMetad(MapTransform):
    """Copy the case's datalist ``id`` into the metadata of ``keys`` (as ``case_id``), for naming outputs."""

    def __init__(self, keys: KeysCollection, id_key: str = "id") -> None:
        super().__init__(keys)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key].meta["case_id"] = str(d[self.id_key])
        return d


def case_output_name(metadict: dict, saver: Any) -> dict:
    """``SaveImaged`` name formatter: with ``separate_folder`` it writes ``<output_dir>/<id>/<id>_<postfix>``."""
    return {"subject": metadict["case_id"], "idx": None}


class SaveSegmentationd(SaveImaged):
    """MONAI's ``SaveImaged``, but each file appears whole or not at all.

    The image is written under a temporary name beside its final one and then renamed, so
    an interrupted run never leaves a truncated segmentation that looks complete (and a
    rerun, which skips cases whose outputs exist, can trust what it finds).
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        saver = self.saver
        for key in self.key_iterator(d):
            img = d[key]
            final = Path(saver.folder_layout.filename(**saver.fname_formatter(img.meta, saver)))
            ext = saver.output_ext
            write_atomically(final, lambda temporary: saver(img, img.meta, filename=str(temporary)[: -len(ext)]))
        return d
