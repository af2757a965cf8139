"""Top-down pose geometry shared by the service and training, so crops cannot drift apart.

Pure numpy + Pillow (no torch, no OpenCV). Conventions follow mmpose 1.x:

- A person crop is described by `center` (2,) and `scale` (2,), both in image pixels: the crop
  covers `scale` = (w, h) pixels around `center`, and `w / h` equals the network input's aspect.
- Affine matrices are `(2, 3)` float64 and map *pixel centres* (integer coordinates) like
  `cv2.warpAffine` does: `dst = M @ [x, y, 1]`.
- Heatmaps are `(K, h, w)` (or batched `(N, K, h, w)`); keypoints are `(..., 2)` as (x, y).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "box_to_center_scale",
    "decode_heatmaps",
    "fix_aspect_ratio",
    "flip_heatmaps_back",
    "get_warp_matrix",
    "keypoints_to_image",
    "transform_points",
    "warp_image",
]


def fix_aspect_ratio(scale: npt.ArrayLike, aspect_ratio: float) -> np.ndarray:
    """Widen the short side of `scale` (..., 2) so that w / h == `aspect_ratio` (mmpose's rule)."""
    scale = np.asarray(scale, dtype=np.float64)
    w, h = scale[..., 0], scale[..., 1]
    wider = w > h * aspect_ratio
    return np.stack([np.where(wider, w, h * aspect_ratio), np.where(wider, w / aspect_ratio, h)], axis=-1)


def box_to_center_scale(
    box_xyxy: npt.ArrayLike, aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Person box (x1, y1, x2, y2) in pixels, (4,) or (N, 4) -> crop `center` and `scale`, (2,) or
    (N, 2), in pixels.

    As mmpose's `bbox_xyxy2cs(padding)` followed by `fix_aspect_ratio`, where
    `aspect_ratio` = input_w / input_h.
    """
    box = np.asarray(box_xyxy, dtype=np.float64)
    center = (box[..., :2] + box[..., 2:]) * 0.5
    scale = (box[..., 2:] - box[..., :2]) * padding
    return center, fix_aspect_ratio(scale, aspect_ratio)


def _rotate(point: np.ndarray, angle_rad: float) -> np.ndarray:
    sin, cos = np.sin(angle_rad), np.cos(angle_rad)
    return np.array([[cos, -sin], [sin, cos]]) @ point


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a - b` rotated 90° anticlockwise about `b`: fixes the aspect of the 3-point affine."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]])


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) affine that maps the three `src` points (3, 2) onto `dst` (3, 2)."""
    lhs = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(lhs, dst).T


def get_warp_matrix(
    center: npt.ArrayLike,
    scale: npt.ArrayLike,
    rot_deg: float,
    output_size_wh: tuple[int, int],
    shift: tuple[float, float] = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """(2, 3) affine mapping the crop (`center`, `scale`, rotated by `rot_deg`) onto the output.

    As mmpose's `get_warp_matrix`: three point pairs, the centre, a point `scale_w / 2` above it
    (rotated), and a third point at 90°. `shift` moves the centre by a fraction of `scale`.
    `inv=True` gives the output -> image mapping instead.
    """
    center_xy = np.asarray(center, dtype=np.float64)
    scale_wh = np.asarray(scale, dtype=np.float64)
    dst_w, dst_h = float(output_size_wh[0]), float(output_size_wh[1])
    shifted_center = center_xy + scale_wh * np.asarray(shift, dtype=np.float64)

    src_dir = _rotate(np.array([0.0, scale_wh[0] * -0.5]), np.deg2rad(rot_deg))
    dst_center = np.array([dst_w * 0.5, dst_h * 0.5])
    dst_dir = np.array([0.0, dst_w * -0.5])

    src = np.stack([shifted_center, shifted_center + src_dir, np.zeros(2)])
    dst = np.stack([dst_center, dst_center + dst_dir, np.zeros(2)])
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return _affine_from_points(dst, src) if inv else _affine_from_points(src, dst)


def transform_points(points: npt.ArrayLike, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points (..., 2); returns float64 (..., 2)."""
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _invert_affine(matrix: np.ndarray) -> np.ndarray:
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]], axis=1)


def warp_image(
    image: np.ndarray | Image.Image, matrix: np.ndarray, output_size_wh: tuple[int, int]
) -> np.ndarray:
    """Warp an image (H, W, 3) uint8 by the (2, 3) image->output affine; returns (h, w, 3) uint8.

    Bilinear, outside filled with 0, pixel centres mapped like `cv2.warpAffine`. Pillow samples
    at `A(x + 0.5, y + 0.5) - 0.5` for an output pixel (x, y), so the inverse affine is shifted
    by half a pixel on both sides to keep integer coordinates at pixel centres.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    inverse = _invert_affine(np.asarray(matrix, dtype=np.float64))
    linear = inverse[:, :2]
    offset = inverse[:, 2] - linear @ np.array([0.5, 0.5]) + 0.5
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    size = (int(output_size_wh[0]), int(output_size_wh[1]))
    warped = pil.transform(
        size,
        Image.Transform.AFFINE,
        data=tuple(float(c) for c in coefficients),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(warped)


def decode_heatmaps(heatmaps: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (K, h, w) or (N, K, h, w) -> keypoints (..., K, 2) in heatmap pixels, scores (..., K).

    As mmpose's `get_heatmap_maximum` + `refine_keypoints`: argmax per map, score = the peak
    value, then 0.25 px toward the higher neighbour on each axis. Maps whose peak is <= 0 give
    (-1, -1). The neighbour tests copy mmpose's bounds exactly (x needs 1 < x < w - 1).
    """
    array = np.asarray(heatmaps)
    batched = array.ndim == 4
    maps = array if batched else array[None]
    n, k, h, w = maps.shape
    flat = maps.reshape(n, k, h * w)
    index = flat.argmax(axis=-1)
    scores = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0].astype(np.float32)
    x = np.where(scores > 0, index % w, -1)
    y = np.where(scores > 0, index // w, -1)

    def value_at(dx: int, dy: int) -> np.ndarray:
        xs = np.clip(x + dx, 0, w - 1)
        ys = np.clip(y + dy, 0, h - 1)
        return maps[np.arange(n)[:, None], np.arange(k)[None, :], ys, xs]

    has_x_neighbours = (x > 1) & (x < w - 1) & (y > 0) & (y < h)
    has_y_neighbours = (y > 1) & (y < h - 1) & (x > 0) & (x < w)
    grad_x = np.where(has_x_neighbours, value_at(1, 0) - value_at(-1, 0), 0.0)
    grad_y = np.where(has_y_neighbours, value_at(0, 1) - value_at(0, -1), 0.0)
    keypoints = np.stack([x, y], axis=-1).astype(np.float32)
    keypoints += np.stack([np.sign(grad_x), np.sign(grad_y)], axis=-1).astype(np.float32) * 0.25
    if not batched:
        return keypoints[0], scores[0]
    return keypoints, scores


def flip_heatmaps_back(flipped: npt.ArrayLike, flip_indices: Sequence[int], shift: bool = True) -> np.ndarray:
    """Heatmaps of a horizontally flipped crop, (K, h, w) or (N, K, h, w) -> heatmaps of the crop.

    As mmpose's flip test: mirror each map, swap left/right channels by `flip_indices`, then
    shift right by one pixel (column 0 keeps its value) to undo the flip's half-pixel bias.
    """
    restored = np.asarray(flipped)[..., ::-1][..., list(flip_indices), :, :].copy()
    if shift:
        restored[..., 1:] = restored[..., :-1].copy()
    return restored


def keypoints_to_image(
    keypoints: npt.ArrayLike, center: npt.ArrayLike, scale: npt.ArrayLike, input_size_wh: tuple[int, int]
) -> np.ndarray:
    """Keypoints (..., K, 2) in input-crop pixels -> image pixels (unrotated crops only).

    `kpt / input_size * scale + center - scale / 2`; `center`, `scale` are (2,), or (N, 2) for
    keypoints (N, K, 2).
    """
    size = np.asarray(input_size_wh, dtype=np.float64)
    center_xy = np.asarray(center, dtype=np.float64)
    scale_wh = np.asarray(scale, dtype=np.float64)
    if center_xy.ndim == 2:
        center_xy, scale_wh = center_xy[:, None], scale_wh[:, None]
    return np.asarray(keypoints, dtype=np.float64) / size * scale_wh + center_xy - scale_wh * 0.5
