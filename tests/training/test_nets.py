from __future__ import annotations

import pytest
import torch
from torch import nn

from training.nets.heads import ExactAdaptiveAvgPool2d
from training.nets.mobilenet_v2 import InvertedResidual, MobileNetV2, make_divisible, zero_init_residual
from training.recipes import RECIPES, get_recipe
from training.summary import summarize

CLASSIFIER = "mobilenet-v2_8xb32_in1k"


def test_classifier_has_exactly_the_published_parameter_count() -> None:
    model = get_recipe(CLASSIFIER).build()
    assert sum(p.numel() for p in model.parameters()) == 3_504_872


def test_classifier_multiply_adds_match_the_paper_and_mmcv() -> None:
    summary = summarize(get_recipe(CLASSIFIER))
    assert summary.macs == 300_774_272  # conv + FC multiply-adds at 224² (REFERENCE.md)
    assert summary.flops / 1e9 == pytest.approx(0.319, abs=0.002)  # mmcv's count, as the table


@pytest.mark.parametrize(
    ("head", "millions"), [("fcn", 9.49), ("pspnet", 13.39), ("deeplabv3", 18.38), ("deeplabv3plus", 15.02)]
)
def test_segmentation_sizes_match_mmseg(head: str, millions: float) -> None:
    model = get_recipe(f"mobilenet-v2-d8_{head}_4xb2-80k_cityscapes-512x1024").build(with_aux=False)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.005)
    assert sum(p.numel() for p in model.backbone.parameters()) / 1e6 == pytest.approx(1.81, abs=0.005)


def test_pose_head_and_backbone_sizes_match_mmpose() -> None:
    model = get_recipe("td-hm_mobilenetv2_8xb64-210e_coco-256x192").build()
    assert sum(p.numel() for p in model.head.parameters()) / 1e6 == pytest.approx(7.35, abs=0.005)
    assert sum(p.numel() for p in model.backbone.parameters()) / 1e6 == pytest.approx(2.22, abs=0.005)


def test_make_divisible_never_loses_more_than_ten_percent() -> None:
    assert make_divisible(32) == 32
    assert make_divisible(3) == 8
    assert make_divisible(16 * 0.35) == 8
    assert make_divisible(67) == 64  # keeps 95%
    assert make_divisible(68) == 72
    assert make_divisible(11.2) == 16  # 8 would keep only 71%


def test_residual_only_where_stride_one_and_channels_match() -> None:
    for stage in MobileNetV2().children():
        for block in stage.modules() if isinstance(stage, nn.Sequential) else []:
            if isinstance(block, InvertedResidual):
                dw = block.conv[-2].conv
                in_ch = block.conv[0].conv.in_channels
                out_ch = block.conv[-1].conv.out_channels
                assert block.use_res_connect == (dw.stride == (1, 1) and in_ch == out_ch)


def test_m_v2_d8_has_output_stride_8_and_dilates_only_first_blocks() -> None:
    model = get_recipe("mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512").build()
    backbone = model.backbone
    assert not hasattr(backbone, "conv2")
    features = backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(24, 16, 16), (32, 8, 8), (96, 8, 8), (320, 8, 8)]
    expected = {4: 2, 5: 2, 6: 4, 7: 4}
    for stage, dilation in expected.items():
        blocks = list(getattr(backbone, f"layer{stage}"))
        assert blocks[0].conv[1].conv.dilation == (dilation, dilation)
        assert blocks[0].conv[1].conv.padding == (dilation, dilation)
        assert all(b.conv[1].conv.dilation == (1, 1) for b in blocks[1:])


def test_classifier_backbone_has_stride_32_and_1280_channels() -> None:
    features = MobileNetV2()(torch.zeros(1, 3, 224, 224))
    assert features[-1].shape == (1, 1280, 7, 7)


@pytest.mark.parametrize(("size", "scale"), [((64, 128), 3), ((64, 128), 6), ((7, 9), 2), ((64, 64), 6)])
def test_exact_adaptive_pool_equals_pytorch_where_scales_do_not_divide(
    size: tuple[int, int], scale: int
) -> None:
    x = torch.randn(2, 5, *size)
    expected = nn.functional.adaptive_avg_pool2d(x, scale)
    assert torch.allclose(ExactAdaptiveAvgPool2d(scale)(x), expected, atol=1e-6)


def test_every_recipe_builds_and_predicts_at_its_input_size() -> None:
    for recipe in RECIPES.values():
        if recipe.task in ("segmentation", "detection"):
            continue  # covered by the export tests and tests/training/test_ssdlite.py
        model = recipe.build().eval()
        h, w = recipe.input_size
        with torch.no_grad():
            out = model.predict(torch.zeros(1, h, w, 3, dtype=torch.uint8))
        if recipe.task == "classification":
            assert out.shape == (1, recipe.num_outputs)
            assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
        else:
            assert out.shape == (1, recipe.num_outputs, h // 4, w // 4)


def test_segmentor_predicts_classes_at_input_resolution_and_aux_only_while_training() -> None:
    model = get_recipe("mobilenet-v2-d8_deeplabv3plus_4xb4-160k_ade20k-512x512").build()
    images = torch.randint(
        0, 255, (2, 64, 96, 3), dtype=torch.uint8
    )  # image pooling's BN needs 2 in training
    model.train()
    out, aux = model(images)
    assert out.shape == (2, 150, 16, 24)  # DeepLabV3+ decodes at stride 4
    assert aux is not None and aux.shape == (2, 150, 8, 12)
    model.eval()
    with torch.no_grad():
        mask = model.predict(images)
    assert mask.shape == (2, 64, 96) and mask.dtype == torch.uint8
    assert model(images)[1] is None


def test_zero_init_residual_makes_every_residual_block_the_identity() -> None:
    backbone = MobileNetV2()
    assert zero_init_residual(backbone) == 10  # n - 1 blocks per stage: 0+1+2+3+2+2+0
    backbone.eval()
    x = torch.randn(1, 32, 14, 14)
    block = backbone.layer3[1]
    assert block.use_res_connect
    assert torch.equal(block(x), x)
    first = backbone.layer3[0]  # strides and changes width: no residual, left as initialised
    assert not torch.all(first.conv[-1].bn.weight == 0)
