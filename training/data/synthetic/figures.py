"""Pose: stick figures with keypoints in the COCO and MPII (mmpose JSON) layouts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.data.synthetic.common import (
    SPLIT_CODE,
    background,
    image_rng,
    save_jpeg,
    to_uint8,
)

# The body model's joints: COCO's 17 in COCO order, then the extra MPII joints.
_PELVIS, _THORAX, _UPPER_NECK, _HEAD_TOP = 17, 18, 19, 20
_NUM_BODY_JOINTS = 21
# MPII-16 order (r_ankle ... l_wrist) as indices into the body model.
_MPII_FROM_BODY = (16, 14, 12, 11, 13, 15, _PELVIS, _THORAX, _UPPER_NECK, _HEAD_TOP, 10, 8, 6, 5, 7, 9)
# Limbs drawn as thick lines. Left and right look alike: a side marker would contradict itself
# under flip augmentation; the figures face the camera, so left is on the image's right.
_LIMBS: tuple[tuple[int, int], ...] = (
    (5, 7),
    (7, 9),
    (11, 13),
    (13, 15),
    (6, 8),
    (8, 10),
    (12, 14),
    (14, 16),
)


@dataclass(frozen=True)
class _Figure:
    joints: np.ndarray  # (21, 2) image pixels (x, y)
    occluded: np.ndarray  # (21,) bool, labelled but hidden
    head_radius: float
    limb_width: int
    height: float  # body height in pixels


def _random_figure(rng: np.random.Generator, image_wh: tuple[int, int], body_height: float) -> _Figure:
    """A front-facing person: the person's left side is on the image's right, as in COCO."""
    width, height = image_wh
    h = body_height
    lean = np.deg2rad(rng.normal(0, 12) if rng.random() < 0.85 else rng.uniform(-80, 80))
    up = np.array([np.sin(lean), -np.cos(lean)])
    side = np.array([np.cos(lean), np.sin(lean)])  # towards the person's left
    pelvis = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.45, 0.62) * h])
    pelvis[1] += rng.uniform(-0.1, 0.1) * h + max(0.0, height - h) * rng.uniform(0, 1)
    neck = pelvis + up * 0.3 * h
    joints = np.zeros((_NUM_BODY_JOINTS, 2))
    joints[_PELVIS], joints[_THORAX] = pelvis, neck
    shoulder, hip = 0.11 * h, 0.075 * h
    joints[5], joints[6] = neck + side * shoulder, neck - side * shoulder
    joints[11], joints[12] = pelvis + side * hip, pelvis - side * hip

    def bend(direction: np.ndarray, degrees: float) -> np.ndarray:
        rad = np.deg2rad(degrees)
        c, s = np.cos(rad), np.sin(rad)
        return np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1]])

    down = -up
    for sign, shoulder_j, elbow_j, wrist_j in ((1, 5, 7, 9), (-1, 6, 8, 10)):
        raise_angle = rng.uniform(-25, 165)
        upper = bend(down, -sign * raise_angle)  # positive angles swing the arm outwards
        joints[elbow_j] = joints[shoulder_j] + upper * 0.17 * h
        joints[wrist_j] = joints[elbow_j] + bend(upper, rng.uniform(-130, 130)) * 0.15 * h
    for sign, hip_j, knee_j, ankle_j in ((1, 11, 13, 15), (-1, 12, 14, 16)):
        spread = rng.uniform(-12, 40)
        thigh = bend(down, -sign * spread)
        joints[knee_j] = joints[hip_j] + thigh * 0.24 * h
        joints[ankle_j] = joints[knee_j] + bend(thigh, rng.uniform(-70, 70)) * 0.23 * h

    head_radius = 0.065 * h
    head = neck + up * head_radius * 1.45
    yaw = rng.uniform(-0.5, 0.5)  # > 0: face turned towards the person's left (image right)
    face = head + side * yaw * head_radius * 0.6
    joints[0] = face + up * -0.1 * head_radius
    eyes = face + up * 0.28 * head_radius
    joints[1], joints[2] = eyes + side * 0.38 * head_radius, eyes - side * 0.38 * head_radius
    joints[3], joints[4] = head + side * head_radius * 0.95, head - side * head_radius * 0.95
    joints[_UPPER_NECK] = neck + up * head_radius * 0.45
    joints[_HEAD_TOP] = head + up * head_radius
    occluded = np.zeros(_NUM_BODY_JOINTS, dtype=bool)
    occluded[3] = yaw > 0.3  # the left ear turns behind the head
    occluded[4] = yaw < -0.3
    return _Figure(joints, occluded, head_radius, max(2, round(0.045 * h)), h)


@dataclass(frozen=True)
class _FigureColours:
    """Fills of one figure's parts (RGB, or (255,) for every part when drawing its mask)."""

    torso: tuple[int, ...]
    limbs: tuple[int, ...]
    head: tuple[int, ...]
    ears: tuple[int, ...]
    eyes: tuple[int, ...] = (15, 15, 15)
    nose: tuple[int, ...] = (200, 40, 40)

    @classmethod
    def random(cls, rng: np.random.Generator) -> _FigureColours:
        torso, limbs = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
        skin = tuple(int(v) for v in rng.integers(90, 240, 3))
        return cls(torso=torso, limbs=limbs, head=skin, ears=tuple(max(0, v - 50) for v in skin))

    @classmethod
    def uniform(cls, value: int) -> _FigureColours:
        fill = (value,)
        return cls(torso=fill, limbs=fill, head=fill, ears=fill, eyes=fill, nose=fill)


def _draw_figure(draw: ImageDraw.ImageDraw, figure: _Figure, colours: _FigureColours) -> None:
    """Draw one figure: torso, limbs, head with ears, eyes and nose."""
    j = [(float(x), float(y)) for x, y in figure.joints]
    width = figure.limb_width
    draw.polygon([j[5], j[6], j[12], j[11]], fill=colours.torso)
    for a, b in _LIMBS:
        draw.line([j[a], j[b]], fill=colours.limbs, width=width, joint="curve")
        for point in (j[a], j[b]):
            _dot(draw, point, width / 2, colours.limbs)
    draw.line([j[_THORAX], j[_UPPER_NECK]], fill=colours.torso, width=width)
    head = (figure.joints[_HEAD_TOP] + figure.joints[_UPPER_NECK]) / 2
    r = figure.head_radius
    for ear in (3, 4):
        if not figure.occluded[ear]:
            _dot(draw, j[ear], r * 0.3, colours.ears)
    _dot(draw, (float(head[0]), float(head[1])), r, colours.head)
    for eye in (1, 2):
        _dot(draw, j[eye], max(1.0, r * 0.13), colours.eyes)
    _dot(draw, j[0], max(1.0, r * 0.16), colours.nose)


def _dot(
    draw: ImageDraw.ImageDraw, center: tuple[float, float], radius: float, fill: tuple[int, ...]
) -> None:
    x, y = center
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)


@dataclass(frozen=True)
class _PosePerson:
    keypoints: np.ndarray  # (21, 2) image pixels
    visibility: np.ndarray  # (21,) 0 out of image, 1 occluded, 2 visible
    bbox_xywh: tuple[float, float, float, float]
    head_box_xyxy: tuple[float, float, float, float]


def _render_pose_image(
    rng: np.random.Generator, size_wh: tuple[int, int]
) -> tuple[np.ndarray, list[_PosePerson]]:
    """An image (H, W, 3) uint8 with 1-3 stick figures, some occluded or cut by the border."""
    width, height = size_wh
    canvas = Image.fromarray(to_uint8(background(rng, height, width)))
    draw = ImageDraw.Draw(canvas)
    count = int(rng.integers(1, 4))
    people = []
    for _ in range(count):
        body_height = height * (rng.uniform(0.45, 0.95) if count == 1 else rng.uniform(0.35, 0.8))
        figure = _random_figure(rng, size_wh, body_height)
        mask = Image.new("L", size_wh, 0)
        _draw_figure(draw, figure, _FigureColours.random(rng))
        _draw_figure(ImageDraw.Draw(mask), figure, _FigureColours.uniform(255))
        occluded = figure.occluded.copy()
        if rng.random() < 0.3:  # an occluder over one limb joint: its keypoints stay labelled (v=1)
            target = figure.joints[int(rng.choice([7, 8, 9, 10, 13, 14, 15, 16]))]
            half = np.array([rng.uniform(0.08, 0.14), rng.uniform(0.06, 0.12)]) * figure.height
            x0, y0 = target - half * rng.uniform(0.3, 1.7, 2)
            x1, y1 = x0 + 2 * half[0], y0 + 2 * half[1]
            occluder = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.rectangle([x0, y0, x1, y1], fill=occluder)
            inside = (
                (figure.joints[:, 0] >= x0)
                & (figure.joints[:, 0] <= x1)
                & (figure.joints[:, 1] >= y0)
                & (figure.joints[:, 1] <= y1)
            )
            occluded |= inside
        mask_array = np.asarray(mask) > 0
        if not mask_array.any():
            continue
        cols = np.flatnonzero(mask_array.any(axis=0))
        rows = np.flatnonzero(mask_array.any(axis=1))
        bbox = (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))
        in_image = (
            (figure.joints[:, 0] >= 0)
            & (figure.joints[:, 0] <= width - 1)
            & (figure.joints[:, 1] >= 0)
            & (figure.joints[:, 1] <= height - 1)
        )
        visibility = np.where(in_image, np.where(occluded, 1, 2), 0)
        head = (figure.joints[_HEAD_TOP] + figure.joints[_UPPER_NECK]) / 2
        r = figure.head_radius * 1.1
        head_box = (float(head[0] - r), float(head[1] - r), float(head[0] + r), float(head[1] + r))
        people.append(_PosePerson(figure.joints.copy(), visibility, bbox, head_box))
    image = np.asarray(canvas, dtype=np.float32) + rng.normal(0.0, 2.5, size=(height, width, 3))
    return to_uint8(image), people


def write_coco_pose(
    root: str | Path,
    *,
    n_train: int = 60,
    n_val: int = 20,
    seed: int = 0,
    size_wh: tuple[int, int] = (320, 256),
    keypoint_names: Sequence[str] | None = None,
    skeleton: Sequence[tuple[int, int]] | None = None,
) -> Path:
    """COCO keypoint layout: `annotations/person_keypoints_{train,val}2017.json`, `{split}2017/*.jpg`.

    Keypoints [x, y, v] × 17 (v = 2 visible, 1 occluded, 0 out of the image with x = y = 0),
    `bbox` the figure's pixel extent (xywh), `area` = 0.5 × bbox area (a filled person's
    segment, not the thin stick figure, sets the OKS scale). `skeleton` (0-based pairs) is
    written 1-based as COCO does. Names and skeleton default to `training.labels`' COCO-17.
    """
    if keypoint_names is None or skeleton is None:
        from training import labels

        keypoint_names = labels.COCO_KEYPOINTS if keypoint_names is None else keypoint_names
        skeleton = labels.COCO_SKELETON if skeleton is None else skeleton
    root = Path(root)
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(keypoint_names),
        "skeleton": [[a + 1, b + 1] for a, b in skeleton],
    }
    for split, count in (("train", n_train), ("val", n_val)):
        images: list[dict[str, object]] = []
        annotations: list[dict[str, object]] = []
        for index in range(count):
            rng = image_rng(seed, split, index, salt=4)
            image, people = _render_pose_image(rng, size_wh)
            image_id = index + 1
            file_name = f"{image_id:012d}.jpg"
            save_jpeg(image, root / f"{split}2017" / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": size_wh[0], "height": size_wh[1]})
            for person in people:
                keypoints: list[float] = []
                for (x, y), v in zip(person.keypoints[:17], person.visibility[:17], strict=True):
                    keypoints += [round(float(x), 2), round(float(y), 2), int(v)] if v else [0.0, 0.0, 0]
                _, _, box_w, box_h = person.bbox_xywh
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "keypoints": keypoints,
                        "num_keypoints": int((person.visibility[:17] > 0).sum()),
                        "bbox": [round(v, 2) for v in person.bbox_xywh],
                        "area": round(0.5 * box_w * box_h, 2),
                        "iscrowd": 0,
                    }
                )
        document = {
            "info": {"description": "synthetic stick figures", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [category],
        }
        path = root / "annotations" / f"person_keypoints_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
    return root


def write_mpii_pose(
    root: str | Path,
    *,
    n_train: int = 60,
    n_val: int = 20,
    seed: int = 0,
    size_wh: tuple[int, int] = (256, 256),
) -> Path:
    """mmpose's MPII layout: `annotations/mpii_{train,val}.json`, `images/*.jpg`, and head boxes
    `annotations/mpii_val_headboxes.json` ({image: [[x1, y1, x2, y2], ...]} per person in file
    order). Like MPII's MATLAB files, coordinates are 1-based; `center` is shifted up by
    15 × scale px so the loader's MPII adjustment lands on the box centre, `scale` = box side / 200.
    Joints out of the image are [-1, -1] with `joints_vis` 0."""
    root = Path(root)
    for split, count in (("train", n_train), ("val", n_val)):
        entries = []
        head_boxes: dict[str, list[list[float]]] = {}
        for index in range(count):
            rng = image_rng(seed, split, index, salt=5)
            image, people = _render_pose_image(rng, size_wh)
            name = f"{SPLIT_CODE[split]}{index + 1:08d}.jpg"
            save_jpeg(image, root / "images" / name)
            for person in people:
                joints = person.keypoints[list(_MPII_FROM_BODY)]
                visible = person.visibility[list(_MPII_FROM_BODY)] > 0
                x, y, w, h = person.bbox_xywh
                scale = max(w, h) / 200.0
                center = [x + w / 2 + 1, y + h / 2 + 1 - 15 * scale]
                entries.append(
                    {
                        "image": name,
                        "center": [round(v, 3) for v in center],
                        "scale": round(scale, 5),
                        "joints": [
                            [round(float(px) + 1, 2), round(float(py) + 1, 2)] if vis else [-1.0, -1.0]
                            for (px, py), vis in zip(joints, visible, strict=True)
                        ],
                        "joints_vis": [int(v) for v in visible],
                    }
                )
                head_boxes.setdefault(name, []).append([round(v + 1, 2) for v in person.head_box_xyxy])
        path = root / "annotations" / f"mpii_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries))
        if split == "val":
            (root / "annotations" / "mpii_val_headboxes.json").write_text(json.dumps(head_boxes))
    return root


# ---------------------------------------------------------------------------------------------
