"""One recipe per row of the OpenMMLab MobileNetV2 results tables, named after its config file.

A recipe holds everything its row needs: the network, input size, normalisation, labels, the
training schedule, the published metrics and the released checkpoint. Look-up by name from one
registry: `RECIPES`, `get_recipe()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from contract.card import Task
from training import labels

if TYPE_CHECKING:  # torch is imported by `build` only: `python -m training --help` stays fast
    from torch import nn

    from training.nets.models import Normalize

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
SEG_HEAD_CHANNELS = 512

Head = Literal["linear", "fcn", "pspnet", "deeplabv3", "deeplabv3plus", "heatmap", "ssdlite"]


@dataclass(frozen=True)
class Schedule:
    """The optimiser and learning-rate policy of a results-table row (batch size is the total)."""

    optimizer: Literal["sgd", "adam"]
    lr: float
    batch_size: int
    policy: Literal["step", "poly", "multistep", "cosine"]
    epochs: int | None = None
    iterations: int | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    gamma: float = 0.1  # step: × gamma every epoch; multistep: × gamma at each milestone
    milestones: tuple[int, ...] = ()  # epochs
    power: float = 0.9  # poly
    min_lr: float = 0.0  # poly
    warmup_iterations: int = 0
    warmup_ratio: float = 0.001


@dataclass(frozen=True)
class DetectionTest:
    """mmdet's `test_cfg` of a detection config: what the service keeps of the raw boxes."""

    score_threshold: float
    iou_threshold: float
    max_per_image: int
    pre_nms_top_k: int  # per feature level, before NMS


@dataclass(frozen=True)
class Release:
    """A checkpoint OpenMMLab published for a row: its URL and how its file name's hash reads.

    `name_hash="file"`: the 8 hex digits in the name begin the file's sha256 (mmcv 0.x, mmpose and
    mmdet tools). `"input"`: mmseg 1.x's `publish_model.py` hashed the checkpoint *before*
    stripping it, so the name cannot be checked against the file; the first download's sha256 is
    recorded in the cache instead, and a later file must match it.
    """

    url: str
    published: dict[str, float] | None = None  # None: the row's own figures (`Recipe.published`)
    name_hash: Literal["file", "input"] = "file"
    note: str = ""
    publisher: Literal["openmmlab", "torchvision"] = "openmmlab"

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Recipe:
    name: str
    task: Task
    dataset: str
    input_size: tuple[int, int]  # (H, W) of the exported graph
    head: Head
    num_outputs: int  # classes, or keypoints for pose
    schedule: Schedule
    published: dict[str, float]
    labels: Callable[[], list[str]]
    # The row's own file first (the one whose figures `published` quotes), then later re-releases.
    releases: tuple[Release, ...] = ()
    palette: Callable[[], list[tuple[int, int, int]]] | None = None
    skeleton: tuple[tuple[int, int], ...] | None = None
    flip_indices: tuple[int, ...] | None = None
    sigma: float | None = None  # pose: Gaussian σ of the heatmap targets, heatmap pixels
    seg_scale: tuple[int, int] | None = None  # segmentation: mmseg's (w, h) scale of resize
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    detection_test: DetectionTest | None = None  # detection: the config's test_cfg

    @property
    def checkpoint_url(self) -> str | None:
        """The row's own released checkpoint."""
        return self.releases[0].url if self.releases else None

    @property
    def heatmap_size(self) -> tuple[int, int] | None:
        """(H, W) of the pose heatmaps: a quarter of the input."""
        if self.task != "pose":
            return None
        return self.input_size[0] // 4, self.input_size[1] // 4

    def at_test_scale(self) -> Recipe:
        """The recipe with the graph's input at its row's test scale (Cityscapes: the whole
        1024×2048 image, as mmseg's test pipeline measures the table's mIoU).

        Only a fixed-size test pipeline has one graph size: ADE20K's resizes each image keeping its
        aspect ratio (short side 512), so no single size is its test scale.
        """
        if self.task != "segmentation" or self.seg_scale is None:
            raise ValueError(f"{self.name}: only segmentation rows have a test scale apart from their input")
        if self.dataset != "cityscapes":
            raise ValueError(
                f"{self.name}: {self.dataset}'s test pipeline keeps each image's aspect ratio "
                f"(Resize to {self.seg_scale[0]}x{self.seg_scale[1]}, keep_ratio), so no one graph size "
                "is its test scale; `evaluate` runs it image by image"
            )
        width, height = self.seg_scale
        return replace(self, input_size=(height, width))

    def build(self, with_aux: bool = True) -> nn.Module:
        """A freshly initialised network; `with_aux` keeps segmentation's training-only FCN head."""
        from training.nets.heads import ClsHead, FCNHead, HeatmapHead
        from training.nets.mobilenet_v2 import MobileNetV2, init_weights
        from training.nets.models import Classifier, Normalize, Segmentor, TopdownPoseEstimator

        normalize = Normalize(self.mean, self.std)
        model: nn.Module
        if self.task == "detection":
            return build_detector(self, normalize)
        if self.task == "classification":
            model = Classifier(MobileNetV2(), ClsHead(1280, self.num_outputs), normalize)
        elif self.task == "pose":
            model = TopdownPoseEstimator(MobileNetV2(), HeatmapHead(1280, self.num_outputs), normalize)
        else:
            backbone = MobileNetV2(
                strides=(1, 2, 2, 1, 1, 1, 1),
                dilations=(1, 1, 1, 2, 2, 4, 4),
                out_indices=(1, 2, 4, 6),
                with_conv2=False,
            )
            aux = FCNHead(96, 256, self.num_outputs, in_index=2, num_convs=1, concat_input=False)
            model = Segmentor(
                backbone, _seg_head(self.head, self.num_outputs), normalize, aux if with_aux else None
            )
        init_weights(model)
        _init_heads_as_openmmlab(model)
        return model


def _init_heads_as_openmmlab(model: nn.Module) -> None:
    """Small outputs at the start, as OpenMMLab initialises its heads: mmseg's `conv_seg` N(0, 0.01),
    mmpose's deconvolutions and final layer N(0, 0.001) (Kaiming there gives heatmaps ~4× too large)."""
    from torch import nn

    for name, module in model.named_modules():
        if name.endswith("conv_seg"):
            std = 0.01
        elif isinstance(module, nn.ConvTranspose2d) or name.endswith("final_layer"):
            std = 0.001
        else:
            continue
        nn.init.normal_(module.weight, 0, std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def _seg_head(head: Head, num_classes: int) -> nn.Module:
    from training.nets.heads import ASPPHead, DepthwiseSeparableASPPHead, FCNHead, PSPHead

    c = SEG_HEAD_CHANNELS
    if head == "fcn":
        return FCNHead(320, c, num_classes)
    if head == "pspnet":
        return PSPHead(320, c, num_classes)
    if head == "deeplabv3":
        return ASPPHead(320, c, num_classes)
    if head == "deeplabv3plus":
        return DepthwiseSeparableASPPHead(320, c, num_classes, c1_in_channels=24)
    raise ValueError(f"not a segmentation head: {head}")


_MMSEG = "https://download.openmmlab.com/mmsegmentation/v0.5/mobilenet_v2"
_MMPOSE = "https://download.openmmlab.com/mmpose"

CLASSIFIER = Recipe(
    name="mobilenet-v2_8xb32_in1k",
    task="classification",
    dataset="imagenet-1k",
    input_size=(224, 224),
    head="linear",
    num_outputs=1000,
    schedule=Schedule("sgd", 0.045, 256, "step", epochs=300, weight_decay=4e-5, gamma=0.98),
    published={"params_m": 3.5, "gflops": 0.319, "top1": 71.86, "top5": 90.42},
    labels=labels.imagenet1k_classes,
    releases=(
        Release(
            "https://download.openmmlab.com/mmclassification/v0/mobilenet_v2/"
            "mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth"
        ),
        # torchvision's files (`features.*` keys, renamed on load); the same network.
        Release(
            "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
            published={"top1": 71.878, "top5": 90.286},
            note="torchvision IMAGENET1K_V1",
            publisher="torchvision",
        ),
        Release(
            "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth",
            published={"top1": 72.154, "top5": 90.822},
            note="torchvision IMAGENET1K_V2",
            publisher="torchvision",
        ),
    ),
)

# (head, published Cityscapes mIoU, checkpoint file, published ADE20K mIoU, checkpoint file)
_SEG_ROWS: tuple[tuple[Head, float, str, float, str], ...] = (
    (
        "fcn",
        61.54,
        "fcn_m-v2-d8_512x1024_80k_cityscapes/fcn_m-v2-d8_512x1024_80k_cityscapes_20200825_124817-d24c28c1.pth",
        19.71,
        "fcn_m-v2-d8_512x512_160k_ade20k/fcn_m-v2-d8_512x512_160k_ade20k_20200825_214953-c40e1095.pth",
    ),
    (
        "pspnet",
        70.23,
        "pspnet_m-v2-d8_512x1024_80k_cityscapes/pspnet_m-v2-d8_512x1024_80k_cityscapes_20200825_124817-19e81d51.pth",
        29.68,
        "pspnet_m-v2-d8_512x512_160k_ade20k/pspnet_m-v2-d8_512x512_160k_ade20k_20200825_214953-f5942f7a.pth",
    ),
    (
        "deeplabv3",
        73.84,
        "deeplabv3_m-v2-d8_512x1024_80k_cityscapes/"
        "deeplabv3_m-v2-d8_512x1024_80k_cityscapes_20200825_124836-bef03590.pth",
        34.08,
        "deeplabv3_m-v2-d8_512x512_160k_ade20k/deeplabv3_m-v2-d8_512x512_160k_ade20k_20200825_223255-63986343.pth",
    ),
    (
        "deeplabv3plus",
        75.20,
        "deeplabv3plus_m-v2-d8_512x1024_80k_cityscapes/"
        "deeplabv3plus_m-v2-d8_512x1024_80k_cityscapes_20200825_124836-d256dd4b.pth",
        34.02,
        "deeplabv3plus_m-v2-d8_512x512_160k_ade20k/"
        "deeplabv3plus_m-v2-d8_512x512_160k_ade20k_20200825_223255-465a01d4.pth",
    ),
)


_LATER_RELEASES: dict[str, tuple[Release, ...]] = {
    # mmseg 1.x's metafile now links a 2023 retrain of the FCN row, published by a tool that
    # named it after the hash of its input file.
    "mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024": (
        Release(
            "https://download.openmmlab.com/mmsegmentation/v0.5/mobilenet_v2/"
            "mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024/"
            "mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024-20230224_185436-13fef4ea.pth",
            published={"mIoU": 71.19},
            name_hash="input",
            note="mmseg 1.x retrain (2023)",
        ),
    ),
}


def _segmentation_recipes() -> list[Recipe]:
    recipes = []
    for head, city_miou, city_ckpt, ade_miou, ade_ckpt in _SEG_ROWS:
        city = f"mobilenet-v2-d8_{head}_4xb2-80k_cityscapes-512x1024"
        ade = f"mobilenet-v2-d8_{head}_4xb4-160k_ade20k-512x512"
        recipes.append(
            Recipe(
                name=city,
                task="segmentation",
                dataset="cityscapes",
                input_size=(512, 1024),
                head=head,
                num_outputs=19,
                schedule=Schedule("sgd", 0.01, 8, "poly", iterations=80_000, weight_decay=5e-4, min_lr=1e-4),
                published={"mIoU": city_miou},
                labels=labels.cityscapes_classes,
                palette=labels.cityscapes_palette,
                releases=(Release(f"{_MMSEG}/{city_ckpt}"), *_LATER_RELEASES.get(city, ())),
                seg_scale=(2048, 1024),
            )
        )
        recipes.append(
            Recipe(
                name=ade,
                task="segmentation",
                dataset="ade20k",
                input_size=(512, 512),
                head=head,
                num_outputs=150,
                schedule=Schedule(
                    "sgd", 0.01, 16, "poly", iterations=160_000, weight_decay=5e-4, min_lr=1e-4
                ),
                published={"mIoU": ade_miou},
                labels=labels.ade20k_classes,
                palette=labels.ade20k_palette,
                releases=(Release(f"{_MMSEG}/{ade_ckpt}"),),
                seg_scale=(2048, 512),
            )
        )
    return recipes


def _pose_recipe(
    dataset: Literal["coco", "mpii"],
    size: tuple[int, int],
    metric: float,
    ckpt: str,
    later: tuple[Release, ...] = (),
) -> Recipe:
    h, w = size
    name = f"td-hm_mobilenetv2_8xb64-210e_{dataset}-{h}x{w}"
    coco = dataset == "coco"
    return Recipe(
        name=name,
        task="pose",
        dataset=dataset,
        input_size=size,
        head="heatmap",
        num_outputs=17 if coco else 16,
        schedule=Schedule(
            "adam", 5e-4, 512, "multistep", epochs=210, milestones=(170, 200), warmup_iterations=500
        ),
        published={"AP": metric} if coco else {"PCKh": metric},
        labels=lambda: list(labels.COCO_KEYPOINTS if coco else labels.MPII_KEYPOINTS),
        skeleton=tuple(labels.COCO_SKELETON if coco else labels.MPII_SKELETON),
        flip_indices=tuple(labels.COCO_FLIP_INDICES if coco else labels.MPII_FLIP_INDICES),
        sigma=3.0 if h == 384 else 2.0,
        releases=(Release(f"{_MMPOSE}/{ckpt}"), *later),
    )


def _mmpose_v1(file_name: str, ap: float) -> Release:
    """An mmpose 1.x re-release of a COCO row (its meta holds numpy arrays)."""
    return Release(
        f"{_MMPOSE}/v1/body_2d_keypoint/topdown_heatmap/coco/{file_name}",
        published={"AP": ap},
        note="mmpose 1.x re-release (2022)",
    )


POSE_RECIPES = [
    _pose_recipe(
        "coco",
        (256, 192),
        0.646,
        "top_down/mobilenetv2/mobilenetv2_coco_256x192-d1e58e7b_20200727.pth",
        (_mmpose_v1("td-hm_mobilenetv2_8xb64-210e_coco-256x192-55a04c35_20221016.pth", 0.648),),
    ),
    _pose_recipe(
        "coco",
        (384, 288),
        0.673,
        "top_down/mobilenetv2/mobilenetv2_coco_384x288-26be4816_20200727.pth",
        (_mmpose_v1("td-hm_mobilenetv2_8xb64-210e_coco-384x288-d3ab1457_20221013.pth", 0.677),),
    ),
    _pose_recipe(
        "mpii", (256, 256), 0.854, "top_down/mobilenetv2/mobilenetv2_mpii_256x256-e068afa7_20200812.pth"
    ),
]

# -- detection: mmdet's SSDLite on MobileNetV2 (the paper's own detector, §6.2) --------------------

_MMDET = "https://download.openmmlab.com/mmdetection/v2.0"

DETECTOR = Recipe(
    name="ssdlite_mobilenetv2-scratch_8xb24-600e_coco",
    task="detection",
    dataset="coco",
    input_size=(320, 320),  # test pipeline: Resize (320, 320), keep_ratio=False
    head="ssdlite",
    num_outputs=80,
    # SGD 0.015, linear warm-up 500 iterations from 0.001, cosine to 0 over 120 epochs of a data set
    # repeated 5 times (the "600e"), batch 8 × 24.
    schedule=Schedule(
        "sgd", 0.015, 192, "cosine", epochs=600, weight_decay=4e-5, warmup_iterations=500, warmup_ratio=0.001
    ),
    published={"box_AP": 21.3},
    labels=labels.coco80_classes,
    releases=(
        Release(
            f"{_MMDET}/ssd/ssdlite_mobilenetv2_scratch_600e_coco/"
            "ssdlite_mobilenetv2_scratch_600e_coco_20210629_110627-974d9307.pth"
        ),
    ),
    # test_cfg: nms_pre 1000 per level, score_thr 0.02, NMS IoU 0.45 per class, max_per_img 200.
    detection_test=DetectionTest(
        score_threshold=0.02, iou_threshold=0.45, max_per_image=200, pre_nms_top_k=1000
    ),
)


def build_detector(recipe: Recipe, normalize: Normalize) -> nn.Module:
    from training.nets.ssdlite import SSDLiteDetector, init_ssdlite

    model = SSDLiteDetector(normalize, recipe.num_outputs)
    init_ssdlite(model)
    return model


RECIPES: dict[str, Recipe] = {
    r.name: r for r in [CLASSIFIER, *_segmentation_recipes(), *POSE_RECIPES, DETECTOR]
}

# The four models `make models` builds and the service serves by default (the detector finds
# /v1/pose's people when a request brings no boxes). FCN is the Cityscapes
# head with the fewest operations (78 GMACs at 512×1024 against 136 for DeepLabV3+), which
# matters most where the service runs on CPU cores.
DEFAULT_RECIPES = (
    CLASSIFIER.name,
    "mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024",
    "td-hm_mobilenetv2_8xb64-210e_coco-256x192",
    DETECTOR.name,
)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; `python -m training recipes` lists them") from None
