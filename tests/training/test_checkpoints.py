"""Released checkpoint layouts load strictly; downloads are verified by the hash in their name.

The state dicts here are written from the documented key layouts (REFERENCE.md), independently of
the project's modules, so a renamed module cannot make both sides agree by accident.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from training.checkpoints import CheckpointError, fetch, load_backbone, load_checkpoint
from training.recipes import get_recipe

# (t, c, n) of MobileNetV2's stages, as in the paper's Table 2.
STAGES = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        f"{prefix}.{k}": (channels,) for k in ("weight", "bias", "running_mean", "running_var")
    }
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def torchvision_layout(with_tracked: bool = True) -> dict[str, tuple[int, ...]]:
    """torchvision `mobilenet_v2` keys and shapes: `features.0..18`, `classifier.1`."""
    shapes: dict[str, tuple[int, ...]] = {"features.0.0.weight": (32, 3, 3, 3), **_bn("features.0.1", 32)}
    k, inp = 1, 32
    for t, c, n in STAGES:
        for _ in range(n):
            hidden, f = inp * t, f"features.{k}.conv"
            if t == 1:
                shapes |= {
                    f"{f}.0.0.weight": (hidden, 1, 3, 3),
                    **_bn(f"{f}.0.1", hidden),
                    f"{f}.1.weight": (c, hidden, 1, 1),
                    **_bn(f"{f}.2", c),
                }
            else:
                shapes |= {
                    f"{f}.0.0.weight": (hidden, inp, 1, 1),
                    **_bn(f"{f}.0.1", hidden),
                    f"{f}.1.0.weight": (hidden, 1, 3, 3),
                    **_bn(f"{f}.1.1", hidden),
                    f"{f}.2.weight": (c, hidden, 1, 1),
                    **_bn(f"{f}.3", c),
                }
            k, inp = k + 1, c
    shapes |= {
        "features.18.0.weight": (1280, 320, 1, 1),
        **_bn("features.18.1", 1280),
        "classifier.1.weight": (1000, 1280),
        "classifier.1.bias": (1000,),
    }
    if not with_tracked:
        shapes = {key: s for key, s in shapes.items() if not key.endswith("num_batches_tracked")}
    return shapes


def openmmlab_backbone_layout(with_conv2: bool = True) -> dict[str, tuple[int, ...]]:
    """`backbone.conv1`, `backbone.layerL.j.conv.i.{conv,bn}`, `backbone.conv2` (ConvModules)."""
    shapes: dict[str, tuple[int, ...]] = {
        "backbone.conv1.conv.weight": (32, 3, 3, 3),
        **_bn("backbone.conv1.bn", 32),
    }
    inp = 32
    for stage, (t, c, n) in enumerate(STAGES, start=1):
        for j in range(n):
            hidden, f = inp * t, f"backbone.layer{stage}.{j}.conv"
            convs = [((hidden, 1, 3, 3), hidden), ((c, hidden, 1, 1), c)]
            if t != 1:
                convs.insert(0, ((hidden, inp, 1, 1), hidden))
            for i, (weight, out) in enumerate(convs):
                shapes |= {f"{f}.{i}.conv.weight": weight, **_bn(f"{f}.{i}.bn", out)}
            inp = c
    if with_conv2:
        shapes |= {"backbone.conv2.conv.weight": (1280, 320, 1, 1), **_bn("backbone.conv2.bn", 1280)}
    return shapes


def conv_module(prefix: str, out: int, inp: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.conv.weight": (out, inp, k, k), **_bn(f"{prefix}.bn", out)}


def fcn_cityscapes_layout() -> dict[str, tuple[int, ...]]:
    return {
        **openmmlab_backbone_layout(with_conv2=False),
        **conv_module("decode_head.convs.0", 512, 320, 3),
        **conv_module("decode_head.convs.1", 512, 512, 3),
        **conv_module("decode_head.conv_cat", 512, 832, 3),
        "decode_head.conv_seg.weight": (19, 512, 1, 1),
        "decode_head.conv_seg.bias": (19,),
        **conv_module("auxiliary_head.convs.0", 256, 96, 3),
        "auxiliary_head.conv_seg.weight": (19, 256, 1, 1),
        "auxiliary_head.conv_seg.bias": (19,),
    }


def deeplabv3plus_ade_layout() -> dict[str, tuple[int, ...]]:
    shapes = {
        **openmmlab_backbone_layout(with_conv2=False),
        **conv_module("decode_head.image_pool.1", 512, 320, 1),
        **conv_module("decode_head.aspp_modules.0", 512, 320, 1),
    }
    for i in (1, 2, 3):
        shapes |= {
            f"decode_head.aspp_modules.{i}.depthwise_conv.conv.weight": (320, 1, 3, 3),
            **_bn(f"decode_head.aspp_modules.{i}.depthwise_conv.bn", 320),
            **conv_module(f"decode_head.aspp_modules.{i}.pointwise_conv", 512, 320, 1),
        }
    shapes |= {
        **conv_module("decode_head.bottleneck", 512, 2560, 3),
        **conv_module("decode_head.c1_bottleneck", 48, 24, 1),
    }
    for i, inp in ((0, 560), (1, 512)):
        shapes |= {
            f"decode_head.sep_bottleneck.{i}.depthwise_conv.conv.weight": (inp, 1, 3, 3),
            **_bn(f"decode_head.sep_bottleneck.{i}.depthwise_conv.bn", inp),
            **conv_module(f"decode_head.sep_bottleneck.{i}.pointwise_conv", 512, inp, 1),
        }
    shapes |= {
        "decode_head.conv_seg.weight": (150, 512, 1, 1),
        "decode_head.conv_seg.bias": (150,),
        **conv_module("auxiliary_head.convs.0", 256, 96, 3),
        "auxiliary_head.conv_seg.weight": (150, 256, 1, 1),
        "auxiliary_head.conv_seg.bias": (150,),
    }
    return shapes


def pose_layout(prefix: str, keypoints: int) -> dict[str, tuple[int, ...]]:
    shapes = openmmlab_backbone_layout()
    for i, inp in ((0, 1280), (3, 256), (6, 256)):
        shapes |= {
            f"{prefix}.deconv_layers.{i}.weight": (inp, 256, 4, 4),
            **_bn(f"{prefix}.deconv_layers.{i + 1}", 256),
        }
    return shapes | {
        f"{prefix}.final_layer.weight": (keypoints, 256, 1, 1),
        f"{prefix}.final_layer.bias": (keypoints,),
    }


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g))
        for k, s in shapes.items()
    }


def save_checkpoint(path: Path, state: dict[str, torch.Tensor], wrapped: bool = True) -> Path:
    torch.save({"state_dict": state, "meta": {"epoch": 1, "mmcv_version": "1.x"}} if wrapped else state, path)
    return path


def with_hash_name(path: Path, stem: str) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path.rename(path.with_name(f"{stem}-{digest[:8]}.pth"))


def test_openmmlab_classifier_checkpoint_loads_strictly(tmp_path: Path) -> None:
    state = random_state(
        openmmlab_backbone_layout() | {"head.fc.weight": (1000, 1280), "head.fc.bias": (1000,)}
    )
    model = get_recipe("mobilenet-v2_8xb32_in1k").build()
    assert load_checkpoint(model, str(save_checkpoint(tmp_path / "cls.pth", state))).layout == "openmmlab"
    loaded = model.state_dict()
    for key in ("backbone.layer4.3.conv.2.bn.running_var", "head.fc.weight", "backbone.conv2.conv.weight"):
        assert torch.equal(loaded[key], state[key])


def test_torchvision_checkpoint_maps_onto_openmmlab_names(tmp_path: Path) -> None:
    state = random_state(torchvision_layout(with_tracked=False), seed=1)
    model = get_recipe("mobilenet-v2_8xb32_in1k").build()
    loaded = load_checkpoint(model, str(save_checkpoint(tmp_path / "tv.pth", state, wrapped=False)))
    assert loaded.layout == "torchvision"
    loaded = model.state_dict()
    pairs = {
        "features.0.0.weight": "backbone.conv1.conv.weight",
        "features.1.conv.0.0.weight": "backbone.layer1.0.conv.0.conv.weight",
        "features.1.conv.1.weight": "backbone.layer1.0.conv.1.conv.weight",
        "features.1.conv.2.running_mean": "backbone.layer1.0.conv.1.bn.running_mean",
        "features.3.conv.1.0.weight": "backbone.layer2.1.conv.1.conv.weight",
        "features.10.conv.3.bias": "backbone.layer4.3.conv.2.bn.bias",
        "features.17.conv.2.weight": "backbone.layer7.0.conv.2.conv.weight",
        "features.18.1.weight": "backbone.conv2.bn.weight",
        "classifier.1.bias": "head.fc.bias",
    }
    for theirs, ours in pairs.items():
        assert torch.equal(loaded[ours], state[theirs]), ours


def test_segmentation_checkpoints_with_auxiliary_head_load_strictly(tmp_path: Path) -> None:
    for name, layout in [
        ("mobilenet-v2-d8_fcn_4xb2-80k_cityscapes-512x1024", fcn_cityscapes_layout()),
        ("mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512", deeplabv3plus_ade_layout()),
    ]:
        state = random_state(layout, seed=2)
        model = get_recipe(name).build()
        load_checkpoint(model, str(save_checkpoint(tmp_path / f"{name}.pth", state)))
        assert torch.equal(
            model.state_dict()["decode_head.conv_seg.weight"], state["decode_head.conv_seg.weight"]
        )


@pytest.mark.parametrize("prefix", ["head", "keypoint_head"])
def test_pose_checkpoints_load_with_new_and_old_head_prefix(tmp_path: Path, prefix: str) -> None:
    state = random_state(pose_layout(prefix, 16), seed=3)
    model = get_recipe("td-hm_mobilenetv2_8xb64-210e_mpii-256x256").build()
    load_checkpoint(model, str(save_checkpoint(tmp_path / "pose.pth", state)))
    assert torch.equal(
        model.state_dict()["head.deconv_layers.3.weight"], state[f"{prefix}.deconv_layers.3.weight"]
    )


def test_a_missing_key_is_an_error_that_names_it(tmp_path: Path) -> None:
    state = random_state(pose_layout("head", 17))
    del state["head.final_layer.bias"]
    model = get_recipe("td-hm_mobilenetv2_8xb64-210e_coco-256x192").build()
    before = model.state_dict()["head.final_layer.weight"].clone()
    with pytest.raises(CheckpointError, match=r"missing 1 keys: head\.final_layer\.bias"):
        load_checkpoint(model, str(save_checkpoint(tmp_path / "pose.pth", state)))
    assert torch.equal(model.state_dict()["head.final_layer.weight"], before)  # nothing half-loaded


def test_an_unexpected_key_or_shape_is_an_error_that_names_it(tmp_path: Path) -> None:
    state = random_state(pose_layout("head", 17))
    state["head.extra.weight"] = torch.zeros(1)
    model = get_recipe("td-hm_mobilenetv2_8xb64-210e_coco-256x192").build()
    with pytest.raises(CheckpointError, match=r"unexpected 1 keys: head\.extra\.weight"):
        load_checkpoint(model, str(save_checkpoint(tmp_path / "a.pth", state)))
    # MPII's 16 heatmaps into the COCO (17) recipe: a shape mismatch, named.
    wrong = random_state(pose_layout("head", 16))
    with pytest.raises(
        CheckpointError, match=r"head\.final_layer\.weight: \(16, 256, 1, 1\) vs \(17, 256, 1, 1\)"
    ):
        load_checkpoint(model, str(save_checkpoint(tmp_path / "b.pth", wrong)))


def test_segmentation_backbone_initialises_from_a_classifier_checkpoint(tmp_path: Path) -> None:
    state = random_state(torchvision_layout(), seed=4)
    model = get_recipe("mobilenet-v2-d8_pspnet_4xb2-80k_cityscapes-512x1024").build()
    load_backbone(model, str(save_checkpoint(tmp_path / "tv.pth", state, wrapped=False)))
    assert torch.equal(model.backbone.layer7[0].conv[2].conv.weight, state["features.17.conv.2.weight"])


def test_download_is_cached_and_verified_by_the_hash_in_its_name(
    tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, base = http_root
    state = random_state(
        openmmlab_backbone_layout() | {"head.fc.weight": (1000, 1280), "head.fc.bias": (1000,)}
    )
    good = with_hash_name(save_checkpoint(root / "tmp.pth", state), "mobilenet_v2_batch256_imagenet_20200708")
    cache = tmp_path / "cache"
    path, digest = fetch(f"{base}/{good.name}", cache=cache)
    assert path == cache / good.name and digest.startswith(good.name[-12:-4])
    good.unlink()  # a second fetch must come from the cache
    assert fetch(f"{base}/{good.name}", cache=cache)[0] == path


def test_a_corrupted_download_is_refused_naming_the_expected_hash(
    tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, base = http_root
    good = with_hash_name(save_checkpoint(root / "tmp.pth", random_state({"w": (4,)})), "ckpt_20221016")
    corrupted = good.read_bytes()[:-10] + b"0123456789"
    good.write_bytes(corrupted)
    expected = good.name[-12:-4]
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=f"expected hash prefix {expected}"):
        fetch(f"{base}/{good.name}", cache=cache)
    assert not any(cache.iterdir())  # nothing half-downloaded is kept
