"""How far to trust each muscle of a prediction: a ``confidence`` (0-1) and a ``check`` flag per muscle.

Built from what inference already has, on the network's grid (coarse, so cheap), before the largest piece is kept:

- **flip agreement**: Dice between the labels of the scan's own pass and of its mirror's pass (``LeftRightFlipInferer``
  leaves it in the prediction's metadata under ``FLIP_AGREEMENT``); a muscle the network only finds from one side
  of the mirror is a guess;
- **probability**: the mean softmax probability of the muscle's class over its voxels;
- **largest piece**: the share of the muscle's volume in its largest connected piece (26-connected, as
  ``KeepLargestConnectedComponentd`` keeps it);
- **anatomy**: rules on where the largest piece lies, relative to the erector spinae + multifidus (ES+M, the muscle
  the weights find best) in world RAS+ millimetres: the side, the mean axial area (volume over its S-I extent, so
  that a short field of view does not count against it), the left/right ratio, the psoas beside the vertebral body
  and in front of the ES+M, the quadratus lumborum (QL) lateral to the spine between the psoas and the ES+M, the
  iliacus lateral to the psoas and no higher than the lower end of the QL (the iliac crest). Where the solid organs
  lie (liver, spleen, kidneys at T11-L2) the muscles have neighbours they do not have at any other place: the psoas
  hugs the vertebral body (its medial edge close to the midline, slice by slice), the QL lies against the ES+M
  (no gap between them), and the iliacus reaches below the QL's lower end (the iliac fossa; an iliacus only at the
  QL's levels means the field shows no iliac bone). A psoas or QL painted on a kidney, the liver or the spleen
  fails these, as does an iliacus on the abdominal wall or the liver. Each rule scores 1 in
  its range and falls linearly to 0 over a margin outside it; the ranges hold the true labels of the phantoms
  (``python -m scripts.tools.confidence_calibration`` checks them) and, checked once by hand, of the real anatomy maps.

``confidence`` = anatomy (the product of the rule scores) × the geometric mean of flip agreement, probability
(rescaled from 0.5-1 to 0-1) and largest-piece share, rescaled from ``EVIDENCE_FLOOR``-1 to 0-1; a missing piece of
evidence (no flip averaging, no probabilities for a label read from a file) is left out of the mean. ``check`` is
true where confidence is below ``CHECK_BELOW``, where any anatomy rule scores below ``RULE_FAILS_BELOW``, or where
the muscle is absent; the reasons are listed. The constants were chosen by ``scripts.tools.confidence_calibration``
(docs/README.md).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform
from scipy.ndimage import find_objects
from scipy.ndimage import label as connected_pieces

from scripts.label_scores import FLIP_AGREEMENT, first_argmax
from scripts.labels import ABBREVIATIONS, LEFT_RIGHT_PAIRS, MUSCLES, mirrored_label

LEFT = {left for left, _ in LEFT_RIGHT_PAIRS}
PSOAS, ILIACUS, QL, ESM = (1, 5), (2, 6), (3, 7), (4, 8)
EVIDENCE_FLOOR = 0.6  # the geometric mean of the evidence at which confidence reaches 0
CHECK_BELOW = 0.5
RULE_FAILS_BELOW = 0.5
# Rule ranges in mm (or cm² / ratio) and the margin over which a score falls from 1 to 0 outside them.
MEAN_AREA_CM2 = {PSOAS: (1.5, 25.0), ILIACUS: (2.0, 30.0), QL: (0.8, 12.0), ESM: (6.0, 45.0)}
AREA_MARGIN = 0.5  # relative: the score is 0 at half the lower bound and at 1.5 × the upper
LEFT_RIGHT_RATIO = (0.5, 2.0)  # of the mean axial areas
RATIO_MARGIN = 1.0  # in the log2 of the ratio
ESM_SEPARATION_MM = (30.0, 120.0)  # x distance between the two ES+M centroids
PSOAS_LATERAL_MM = (20.0, 75.0)  # x distance from the midline between the ES+M
PSOAS_ANTERIOR_MM = (30.0, 90.0)  # y distance in front of the ES+M centroids
QL_LATERAL_MM = (35.0, 110.0)
QL_ANTERIOR_MM = (-10.0, 70.0)
ILIACUS_ABOVE_QL_MM = 30.0  # the iliacus centroid may lie at most this far above the QL's lower end
ILIACUS_BELOW_QL_MM = 10.0  # and its lowest voxel at least this far below it (in the iliac fossa)
# Median over slices of the psoas' closest approach to the midline: 19-34 mm on the true labels of 32 phantom psoas
# (procedural and five real maps), 26-70 (median 43) for a psoas painted on a kidney.
PSOAS_MEDIAL_EDGE_MM = 35.0
EDGE_MARGIN_MM = 10.0
QL_GAP_MM = 12.0  # median over slices of the gap between the QL and its side's ES+M (true labels: one voxel)
POSITION_MARGIN_MM = 20.0
GAP_MARGIN_MM = 15.0
NOT_FOUND = {"confidence": 0.0, "check": True, "check_reasons": "not found", "evidence": {}}


@dataclass(frozen=True)
class Piece:
    """One muscle's prediction on a grid: voxel count, mean probability (None without), largest-piece share, and
    of the largest piece: volume (mL), centroid (world mm, RAS+), lowest and highest world z (mm) of its voxels'
    outer faces, and its voxel centres (N × 3 world mm) with the slice index of each."""

    voxels: int
    probability: float | None
    largest_share: float
    volume_ml: float
    centroid: np.ndarray
    z_range: tuple[float, float]
    world: np.ndarray
    slices: np.ndarray

    @property
    def mean_area_cm2(self) -> float:
        """Volume over S-I extent: the mean axial area, whatever part of the muscle the field of view holds."""
        return 1000.0 * self.volume_ml / (self.z_range[1] - self.z_range[0]) / 100.0


def muscle_pieces(label: np.ndarray, affine: np.ndarray, probabilities: np.ndarray | None = None) -> dict[int, Piece]:
    """The ``Piece`` of every muscle present in ``label`` (3-D, values of ``scripts.labels``) on the grid of
    ``affine``; ``probabilities`` (9 × label's shape) gives each muscle's mean probability."""
    affine = np.asarray(affine, np.float64)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    half_height = float(np.abs(affine[2, :3]).sum()) / 2  # from a voxel's centre to its top in world z
    pieces = {}
    for muscle, box in zip(MUSCLES, find_objects(label, max_label=max(MUSCLES))):  # entry i: label value i + 1
        if box is None:
            continue
        mask = label[box] == muscle
        components, n = connected_pieces(mask, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(components.ravel())[1:]
        largest = components == 1 + int(np.argmax(sizes))
        where = np.argwhere(largest) + [s.start for s in box]
        world = where @ affine[:3, :3].T + affine[:3, 3]
        probability = None
        if probabilities is not None:
            probability = float(np.asarray(probabilities[muscle][box])[mask].mean())
        pieces[muscle] = Piece(
            voxels=int(sizes.sum()),
            probability=probability,
            largest_share=float(sizes.max() / sizes.sum()),
            volume_ml=float(sizes.max() * voxel_ml),
            centroid=world.mean(axis=0),
            z_range=(float(world[:, 2].min()) - half_height, float(world[:, 2].max()) + half_height),
            world=world,
            slices=where[:, 2],
        )
    return pieces


def in_range(value: float, low: float, high: float, margin: float) -> float:
    """1 inside [low, high], falling linearly to 0 at ``margin`` outside it."""
    outside = max(low - value, value - high, 0.0)
    return float(max(0.0, 1.0 - outside / margin))


def median_medial_edge(piece: Piece, midline: float) -> float:
    """Median over the piece's slices of its voxels' smallest distance (mm) from the midline (world x)."""
    distance = np.abs(piece.world[:, 0] - midline)
    return float(np.median([distance[piece.slices == k].min() for k in np.unique(piece.slices)]))


def median_gap(piece: Piece, neighbour: Piece) -> float:
    """Median over the slices both pieces hold of the in-plane distance (mm) between their closest voxel centres;
    inf where they share no slice."""
    gaps = []
    for k in np.intersect1d(piece.slices, neighbour.slices):
        a, b = piece.world[piece.slices == k, :2], neighbour.world[neighbour.slices == k, :2]
        gaps.append(float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).min()))
    return float(np.median(gaps)) if gaps else float("inf")


def anatomy_rules(muscle: int, pieces: Mapping[int, Piece]) -> dict[str, tuple[float, str]]:
    """Each anatomy rule's score (0-1) for ``muscle`` and what was measured, as ``{rule: (score, text)}``."""
    piece = pieces[muscle]
    group = next(g for g in (PSOAS, ILIACUS, QL, ESM) if muscle in g)
    low, high = MEAN_AREA_CM2[group]
    area = piece.mean_area_cm2
    margin = AREA_MARGIN * (low if area < low else high)
    rules = {"mean area": (in_range(area, low, high, margin), f"mean axial area {area:.1f} cm²")}
    partner = pieces.get(mirrored_label(muscle))
    if partner is not None:
        ratio = area / max(partner.mean_area_cm2, 1e-6)
        score = in_range(np.log2(ratio), *np.log2(LEFT_RIGHT_RATIO), RATIO_MARGIN)
        rules["left/right"] = (score, f"area {ratio:.2f} × the other side's")
    spine = [pieces[m] for m in ESM if m in pieces]
    if not spine:
        rules["beside the spine"] = (0.0, "no erector spinae + multifidus to place it by")
        return rules
    midline = float(np.mean([p.centroid[0] for p in spine])) if len(spine) == 2 else None
    back = float(np.mean([p.centroid[1] for p in spine]))
    towards_side = -1.0 if muscle in LEFT else 1.0  # RAS+: the subject's left is at smaller x
    if muscle in ESM:
        psoas = pieces.get(PSOAS[ESM.index(muscle)])
        if psoas is not None:  # one of the two is wrong where they are not this far apart: look at both
            anterior = psoas.centroid[1] - piece.centroid[1]
            score = in_range(anterior, *PSOAS_ANTERIOR_MM, POSITION_MARGIN_MM)
            rules["behind the psoas"] = (score, f"{anterior:.0f} mm behind the psoas")
        if midline is not None:
            separation = abs(pieces[4].centroid[0] - pieces[8].centroid[0])
            correct = (pieces[8].centroid[0] - pieces[4].centroid[0]) > 0
            score = in_range(separation, *ESM_SEPARATION_MM, POSITION_MARGIN_MM) if correct else 0.0
            rules["pair"] = (score, f"{separation:.0f} mm from the other side" + ("" if correct else ", sides swapped"))
        return rules
    if midline is None:  # one ES+M only: its own side's ES+M stands in for the midline, less strictly
        other = spine[0]
        midline = other.centroid[0] - (-1.0 if 4 in pieces else 1.0) * np.mean(ESM_SEPARATION_MM) / 2
    lateral = towards_side * (piece.centroid[0] - midline)
    anterior = piece.centroid[1] - back
    where = f"{lateral:.0f} mm lateral of the midline, {anterior:.0f} mm in front of ES+M"
    if muscle in PSOAS:
        score = min(
            in_range(lateral, *PSOAS_LATERAL_MM, POSITION_MARGIN_MM),
            in_range(anterior, *PSOAS_ANTERIOR_MM, POSITION_MARGIN_MM),
        )
        rules["beside the spine"] = (score, where)
        edge = median_medial_edge(piece, midline)
        score = in_range(edge, 0.0, PSOAS_MEDIAL_EDGE_MM, EDGE_MARGIN_MM)
        rules["against the vertebral body"] = (score, f"medial edge {edge:.0f} mm from the midline")
    elif muscle in QL:
        score = min(
            in_range(lateral, *QL_LATERAL_MM, POSITION_MARGIN_MM),
            in_range(anterior, *QL_ANTERIOR_MM, POSITION_MARGIN_MM),
        )
        psoas = pieces.get(PSOAS[QL.index(muscle)])
        if psoas is not None:
            score = min(score, in_range(psoas.centroid[1] - piece.centroid[1], 0.0, np.inf, POSITION_MARGIN_MM))
        rules["lateral of the spine, behind the psoas"] = (score, where)
        back_muscle = pieces.get(ESM[QL.index(muscle)])
        if back_muscle is not None:
            gap = median_gap(piece, back_muscle)
            rules["against the erector spinae"] = (
                in_range(gap, 0.0, QL_GAP_MM, GAP_MARGIN_MM),
                f"{gap:.0f} mm from the erector spinae + multifidus",
            )
    else:
        psoas, ql = pieces.get(PSOAS[ILIACUS.index(muscle)]), pieces.get(QL[ILIACUS.index(muscle)])
        score = in_range(anterior, 0.0, np.inf, POSITION_MARGIN_MM)
        if psoas is not None:
            psoas_lateral = towards_side * (psoas.centroid[0] - midline)
            score = min(score, in_range(lateral - psoas_lateral, 0.0, np.inf, POSITION_MARGIN_MM))
        text = where
        if ql is not None:
            above = piece.centroid[2] - ql.z_range[0]
            score = min(score, in_range(above, -np.inf, ILIACUS_ABOVE_QL_MM, POSITION_MARGIN_MM))
            text += f", centre {above:.0f} mm above the QL's lower end"
            below = ql.z_range[0] - piece.z_range[0]
            rules["in the iliac fossa"] = (
                in_range(below, ILIACUS_BELOW_QL_MM, np.inf, GAP_MARGIN_MM),
                f"lowest voxel {below:.0f} mm below the QL's lower end (no iliac fossa in the field where not below)",
            )
        rules["on the iliac wing"] = (score, text)
    return rules


def muscle_confidence(
    label: np.ndarray,
    affine: np.ndarray,
    probabilities: np.ndarray | None = None,
    agreement: np.ndarray | None = None,
) -> dict[str, dict]:
    """Per muscle abbreviation: ``confidence`` (0-1, 3 decimals), ``check``, ``check_reasons`` (text, "" when
    none) and the ``evidence`` it rests on (each 0-1) of a prediction ``label`` on the grid of ``affine``, with its
    class ``probabilities`` (9 × shape) and per-muscle flip ``agreement`` (8 values) where known (see the module
    docstring)."""
    pieces = muscle_pieces(np.asarray(label), affine, probabilities)
    result = {}
    for muscle in MUSCLES:
        name = ABBREVIATIONS[muscle]
        if muscle not in pieces:
            result[name] = dict(NOT_FOUND)
            continue
        piece = pieces[muscle]
        evidence = {"largest piece": piece.largest_share}
        if piece.probability is not None:
            evidence["probability"] = float(np.clip(2.0 * piece.probability - 1.0, 0.0, 1.0))
        if agreement is not None:
            evidence["flip agreement"] = float(agreement[muscle - 1])
        rules = anatomy_rules(muscle, pieces)
        anatomy = float(np.prod([score for score, _ in rules.values()]))
        mean = float(np.prod(list(evidence.values()))) ** (1.0 / len(evidence))
        confidence = anatomy * float(np.clip((mean - EVIDENCE_FLOOR) / (1.0 - EVIDENCE_FLOOR), 0.0, 1.0))
        reasons = [f"{rule}: {text}" for rule, (score, text) in rules.items() if score < RULE_FAILS_BELOW]
        if confidence < CHECK_BELOW:
            reasons.append("low confidence (" + ", ".join(f"{k} {v:.2f}" for k, v in evidence.items()) + ")")
        evidence["anatomy"] = anatomy
        result[name] = {
            "confidence": round(confidence, 3),
            "check": bool(reasons),
            "check_reasons": "; ".join(reasons),
            "evidence": {k.replace(" ", "_"): round(v, 3) for k, v in evidence.items()},
        }
    return result


class MuscleConfidenced(MapTransform):
    """Inference's confidence step: from the class probabilities ``key`` (9 channels, after the softmax, on the
    network's grid, before the label is chosen) and the flip agreement in their metadata, store
    ``muscle_confidence`` under ``output_key`` for the case report. The probabilities are not changed."""

    def __init__(self, keys: str, output_key: str = "confidence") -> None:
        super().__init__(keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            probabilities = d[key]
            agreement = probabilities.meta.get(FLIP_AGREEMENT) if hasattr(probabilities, "meta") else None
            affine = probabilities.affine.cpu().numpy() if hasattr(probabilities, "affine") else np.eye(4)
            probabilities = torch.as_tensor(probabilities).detach().cpu()
            d[self.output_key] = muscle_confidence(
                first_argmax(probabilities).numpy(),
                affine,
                probabilities.numpy(),
                None if agreement is None else np.asarray(agreement),
            )
        return d
