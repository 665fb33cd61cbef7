"""3D U-Nets, their registration in build_model, and padding of volumes."""
import numpy as np
import pytest
import torch
from torch import nn

from satloss_gpu.training.models import (MODEL_NAMES, MODEL_NAMES_3D, UNet, UNet3D, UNet3D_small,
                                         UNet_small, build_model, model_logits,
                                         model_spatial_dims, pad_to_multiple, size_divisor)


def test_unet3d_shapes_logits_and_gradients():
    torch.manual_seed(0)
    net = UNet3D(widths=(4, 8, 16))
    assert net.divisor == 4 and net.spatial_dims == 3 and size_divisor(net) == 4
    x = torch.rand(2, 1, 8, 12, 4)
    prob = net(x)
    assert prob.shape == (2, 1, 8, 12, 4)
    assert 0 <= float(prob.min().detach()) and float(prob.max().detach()) <= 1
    torch.testing.assert_close(torch.sigmoid(model_logits(net, x)), prob)
    net(x, logits=True).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet3d_layers_and_norms():
    net = UNet3D(in_channels=2, out_channels=3, widths=(4, 8), norm="batch")
    kinds = {type(m) for m in net.modules()}
    assert nn.Conv3d in kinds and nn.BatchNorm3d in kinds and nn.ConvTranspose3d in kinds
    assert nn.Conv2d not in kinds and nn.BatchNorm2d not in kinds
    assert net(torch.rand(1, 2, 2, 4, 6)).shape == (1, 3, 2, 4, 6)
    small = UNet3D_small()
    assert small.widths == (8, 16, 32, 64) and small.divisor == 8
    assert any(isinstance(m, nn.InstanceNorm3d) for m in small.modules())
    with pytest.raises(ValueError, match="`norm` must be one of"):
        UNet3D(norm="group")


def test_2d_unet_keeps_its_layers_and_parameter_names():
    net = UNet_small()
    assert net.spatial_dims == 2 and net.norm == "batch"
    kinds = {type(m) for m in net.modules()}
    assert nn.Conv3d not in kinds and nn.BatchNorm2d in kinds
    names = set(net.state_dict())
    assert {"down.0.0.weight", "down.0.1.running_mean", "up.0.weight", "merge.0.4.weight",
            "head.weight", "head.bias"} <= names
    assert net(torch.rand(1, 3, 16, 8)).shape == (1, 1, 16, 8)


def test_build_model_names():
    assert MODEL_NAMES == ("UNet", "UNet_small")
    for name in MODEL_NAMES_3D:
        model = build_model(name, in_channels=1)
        assert isinstance(model, UNet3D) and model_spatial_dims(model) == 3
    model = build_model("UNet3D", in_channels=2, kwargs={"widths": (4, 8), "norm": "batch"})
    assert model.widths == (4, 8) and model.down[0][0].in_channels == 2
    assert model_spatial_dims(build_model("UNet_small")) == 2
    assert model_spatial_dims(nn.Conv3d(1, 1, 1)) is None
    with pytest.raises(ValueError, match="'UNet3D_small'"):
        build_model("unet3d")
    with pytest.raises(ValueError, match="do not fit UNet3D_small"):
        build_model("UNet3D_small", kwargs={"widths": (2, 4)})


def test_model_logits_checks_volume_outputs():
    x = torch.rand(1, 1, 4, 4, 4)
    message = r"logits \(B, K, D, H, W\) of the input's size \(4, 4, 4\)"
    with pytest.raises(ValueError, match=message):
        model_logits(nn.Conv3d(1, 1, 3), x)
    with pytest.raises(ValueError, match=r"logits \(B, K, D, H, W\)"):
        model_logits(lambda v: v[:, :, 0], x)
    assert model_logits(nn.Conv3d(1, 2, 3, padding=1), x).shape == (1, 2, 4, 4, 4)
    with pytest.raises(ValueError, match=r"logits \(B, K, H, W\)"):
        model_logits(nn.Conv2d(3, 1, 3), torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("shape", [(1, 1, 5, 6, 7), (2, 3, 8, 3, 9)])
def test_pad_to_multiple_volumes_reflects_like_numpy(shape):
    x = torch.rand(*shape, dtype=torch.float64)
    padded, size = pad_to_multiple(x, 4)
    assert size == shape[2:]
    expected = np.pad(x.numpy(), [(0, 0), (0, 0)] + [(0, (-n) % 4) for n in shape[2:]],
                      mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)


def test_pad_to_multiple_replicates_pads_longer_than_an_axis():
    x = torch.rand(1, 1, 2, 9, 8, dtype=torch.float64)
    padded, size = pad_to_multiple(x, 8)
    expected = np.pad(x.numpy(), [(0, 0), (0, 0), (0, 6), (0, 7), (0, 0)], mode="edge")
    assert size == (2, 9, 8)
    np.testing.assert_array_equal(padded.numpy(), expected)


def test_pad_to_multiple_images_unchanged():
    x = torch.rand(2, 3, 13, 10, dtype=torch.float64)
    padded, size = pad_to_multiple(x, 8)
    expected = np.pad(x.numpy(), [(0, 0), (0, 0), (0, 3), (0, 6)], mode="reflect")
    assert size == (13, 10)
    np.testing.assert_array_equal(padded.numpy(), expected)
    # an explicit spatial_dims=2 pads only the last two axes of a 5-D tensor
    v = torch.rand(1, 1, 3, 5, 5, dtype=torch.float64)
    padded, size = pad_to_multiple(v, 4, spatial_dims=2)
    assert padded.shape == (1, 1, 3, 8, 8) and size == (5, 5)
    with pytest.raises(ValueError, match="`spatial_dims` must be 2 or 3"):
        pad_to_multiple(v, 4, spatial_dims=4)


def test_whole_volume_prediction_after_padding():
    net = UNet3D(widths=(4, 8)).eval()
    x = torch.rand(1, 1, 5, 7, 3)
    padded, (d, h, w) = pad_to_multiple(x, size_divisor(net))
    with torch.no_grad():
        out = net(padded)[..., :d, :h, :w]
    assert out.shape == (1, 1, 5, 7, 3)
    assert isinstance(net, UNet)
