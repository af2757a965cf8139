"""Top-down pose: person boxes → affine crops (mmpose's centre/scale), heatmaps → image keypoints.

The geometry itself lives in `contract.pose_geometry`, shared with training so crops cannot drift.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from contract import pose_geometry as geometry
from contract.card import ModelCard
from contract.errors import InvalidBoxes
from contract.results import Keypoint, Person

# A box narrower than a pixel has no crop; one reaching further than the image's own size beyond it
# (±1e308) would be a crop of nothing but padding, its keypoints null.
MIN_BOX_SIDE = 1.0
# Keypoints scoring below this are not drawn (mmpose's visualiser's `kpt_thr`); /v1/pose's
# `keypoint_threshold` defaults to it, and the demo page draws by the same figure.
DRAW_THRESHOLD = 0.3


@dataclass
class Crops:
    """Where each person's crop came from: `centers` and `scales` (n, 2) in image pixels."""

    centers: np.ndarray
    scales: np.ndarray


def parse_boxes(text: str, max_boxes: int) -> np.ndarray:
    """JSON `[[x1, y1, x2, y2], ...]` → (n, 4) float64. Raises `InvalidBoxes`."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidBoxes(f"boxes must be a JSON list of [x1, y1, x2, y2]: {exc}") from exc
    if not isinstance(value, list):
        raise InvalidBoxes("boxes must be a JSON list of [x1, y1, x2, y2]")
    if len(value) > max_boxes:
        raise InvalidBoxes(f"{len(value)} boxes; at most {max_boxes} (MAX_BOXES)")
    boxes = np.zeros((len(value), 4), np.float64)
    for i, box in enumerate(value):
        if not isinstance(box, list) or len(box) != 4:
            raise InvalidBoxes(f"box {i} is not a list of four numbers [x1, y1, x2, y2]")
        for j, v in enumerate(box):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InvalidBoxes(f"box {i} has a coordinate that is not a number: {v!r}")
            try:
                boxes[i, j] = float(v)
            except OverflowError:
                boxes[i, j] = math.inf
            if not math.isfinite(boxes[i, j]):
                raise InvalidBoxes(f"box {i} has a coordinate that is not finite: {str(v)[:40]}")
        x1, y1, x2, y2 = boxes[i]
        if x2 < x1 + MIN_BOX_SIDE or y2 < y1 + MIN_BOX_SIDE:  # 5e-324 wide made a singular warp
            raise InvalidBoxes(f"box {i} is empty: needs x2 ≥ x1 + 1 and y2 ≥ y1 + 1 (pixels), got {box}")
    return boxes


def check_boxes_in_image(boxes: np.ndarray, size_wh: tuple[int, int]) -> None:
    """Every box must overlap the image and lie within it extended by its own size on each side
    (boxes partly outside are fine: mmpose pads with 0)."""
    width, height = size_wh
    outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InvalidBoxes(f"box {i} {boxes[i].tolist()} lies entirely outside the {width}×{height} image")
    far = (boxes[:, [0, 2]] < -width).any(axis=1) | (boxes[:, [0, 2]] > 2 * width).any(axis=1)
    far |= (boxes[:, [1, 3]] < -height).any(axis=1) | (boxes[:, [1, 3]] > 2 * height).any(axis=1)
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise InvalidBoxes(
            f"box {i} {boxes[i].tolist()} reaches further than the image's own size beyond the "
            f"{width}×{height} image"
        )


def whole_image_box(size_wh: tuple[int, int]) -> np.ndarray:
    return np.array([[0.0, 0.0, float(size_wh[0]), float(size_wh[1])]])


def input_size(card: ModelCard) -> tuple[int, int]:
    """(w, h) of the network input."""
    return card.input.width, card.input.height


def _center_scale(box: np.ndarray, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    size = input_size(card)
    return geometry.box_to_center_scale(box, size[0] / size[1], card.preprocess.box_padding or 1.25)


def draft_size(size_wh: tuple[int, int], boxes: np.ndarray, card: ModelCard) -> tuple[int, int]:
    """The (w, h) to ask `decode_image` for: the JPEG's largest DCT reduction (8, 4, 2 or 1) at
    which every person's crop is still at least as wide as the network's input.

    So no crop is upsampled where it would not have been from the full image. A whole 1080p image
    as one person: its crop is 2400 px wide, 300 px at 1/8, ≥ 192.
    """
    if len(boxes) == 0:
        return size_wh
    smallest_crop_width = float(_center_scale(boxes, card)[1][:, 0].min())
    reduction = next((r for r in (8, 4, 2) if smallest_crop_width / r >= card.input.width), 1)
    return max(1, size_wh[0] // reduction), max(1, size_wh[1] // reduction)


def crop_people(
    image: np.ndarray, boxes: np.ndarray, card: ModelCard, out: np.ndarray, flip: bool, reduction: int = 1
) -> Crops:
    """Warp each box of `image` (H, W, 3) uint8 into `out` (n or 2n, h, w, 3).

    `boxes` are in full-image pixels; `image` may be a JPEG decoded at 1/`reduction` scale
    (`DecodedImage.reduction`). With `flip`, rows n..2n-1 hold the mirrored crops for the flip test.
    """
    size = input_size(card)
    n = len(boxes)
    centers, scales = np.zeros((n, 2)), np.zeros((n, 2))
    # Reduced pixel i is the mean of full pixels i·r … i·r + r − 1: its centre is at i·r + (r − 1)/2.
    shift = (reduction - 1) / 2
    reduced_to_full = np.array([[reduction, 0, shift], [0, reduction, shift], [0, 0, 1.0]])
    pil = Image.fromarray(image)
    for i, box in enumerate(boxes):
        centers[i], scales[i] = _center_scale(box, card)
        matrix = geometry.get_warp_matrix(centers[i], scales[i], 0.0, size) @ reduced_to_full
        out[i] = geometry.warp_image(pil, matrix, size)
        if flip:
            out[n + i] = out[i, :, ::-1]
    return Crops(centers, scales)


def decode_people(
    heatmaps: np.ndarray, crops: Crops, card: ModelCard, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(n or 2n, K, h, w) heatmaps → keypoints (n, K, 2) in image pixels and scores (n, K)."""
    n = len(crops.centers)
    if flip:
        assert card.flip_indices is not None
        restored = geometry.flip_heatmaps_back(heatmaps[n:], card.flip_indices, shift=True)
        heatmaps = (heatmaps[:n] + restored) * 0.5
    keypoints, scores = geometry.decode_heatmaps(heatmaps)
    size = input_size(card)
    to_input = np.array([size[0] / heatmaps.shape[3], size[1] / heatmaps.shape[2]])
    in_image = geometry.keypoints_to_image(keypoints * to_input, crops.centers, crops.scales, size)
    return in_image, scores


def people(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, card: ModelCard) -> list[Person]:
    return [
        Person(
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            score=float(np.mean(person_scores)) if len(person_scores) else 0.0,
            keypoints=[
                Keypoint(name=name, x=float(xy[0]), y=float(xy[1]), score=float(s))
                for name, xy, s in zip(card.labels, person_keypoints, person_scores, strict=True)
            ],
        )
        for box, person_keypoints, person_scores in zip(boxes, keypoints, scores, strict=True)
    ]


def skeleton_names(card: ModelCard) -> list[tuple[str, str]]:
    return [(card.labels[a], card.labels[b]) for a, b in card.skeleton or []]


def draw(
    image: Image.Image,
    found: list[Person],
    card: ModelCard,
    size_wh: tuple[int, int] | None = None,
    threshold: float = DRAW_THRESHOLD,
) -> Image.Image:
    """The image with each person's box, and the keypoints scoring ≥ `threshold` with the limbs
    between them, drawn.

    `found` is in the pixels of an image of `size_wh` (default: `image`'s own); `image` may be
    that image at another scale (the answer's canvas), and is drawn on at its own size. The pen
    follows the canvas: at most `ANSWER_MAX_SIDE` / 300 px wide there, so the drawing is bounded.
    """
    canvas = image.convert("RGB")
    pen = ImageDraw.Draw(canvas)
    sx, sy = (canvas.width / size_wh[0], canvas.height / size_wh[1]) if size_wh else (1.0, 1.0)
    width = max(2, round(max(canvas.size) / 300))
    for person in found:
        x1, y1, x2, y2 = person.box
        pen.rectangle((x1 * sx, y1 * sy, x2 * sx, y2 * sy), outline=(0, 255, 0), width=width)
        points = {k.name: (k.x * sx, k.y * sy) for k in person.keypoints if k.score >= threshold}
        for a, b in skeleton_names(card):
            if a in points and b in points:
                pen.line([points[a], points[b]], fill=(255, 128, 0), width=width)
        for x, y in points.values():
            pen.ellipse(
                [x - width * 1.5, y - width * 1.5, x + width * 1.5, y + width * 1.5], fill=(255, 0, 0)
            )
    return canvas
