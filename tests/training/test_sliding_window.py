"""Sliding-window inference against whole-image inference."""
import pytest
import torch

from satloss_gpu.training.models import UNet_small
from satloss_gpu.training.sliding_window import (blend_weights, number_of_windows,
                                        sliding_window_inference, window_starts)


def _pixelwise_model() -> torch.nn.Module:
    """A network whose output at a pixel depends on that pixel alone."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Tanh(),
                               torch.nn.Conv2d(4, 2, 1), torch.nn.Sigmoid()).eval()


@pytest.mark.parametrize("size", [1, 2, 7, 16, 33, 100])
@pytest.mark.parametrize("window,overlap", [(1, 0.0), (4, 0.5), (8, 0.25), (16, 0.9), (200, 0.5)])
def test_windows_cover_the_image_and_end_at_its_border(size, window, overlap):
    starts = window_starts(size, window, overlap)
    length = min(window, size)
    covered = torch.zeros(size, dtype=torch.bool)
    for start in starts:
        covered[start:start + length] = True
    assert bool(covered.all())
    assert starts[0] == 0 and starts[-1] == size - length
    assert starts == sorted(set(starts))


def test_one_window_over_the_whole_image_equals_whole_image_inference():
    torch.manual_seed(1)
    net = UNet_small().eval()
    image = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        whole = net(image)
        tiled = sliding_window_inference(net, image, window=(32, 40))
        larger = sliding_window_inference(net, image, window=64)
    torch.testing.assert_close(tiled, whole, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(larger, whole, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("window,overlap,batch_size", [(8, 0.0, 1), (16, 0.5, 3), ((9, 20), 0.25, 64)])
def test_pixelwise_model_gives_the_whole_image_output_for_any_windows(blend, window, overlap,
                                                                      batch_size):
    net = _pixelwise_model()
    image = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        whole = net(image)
        tiled = sliding_window_inference(net, image, window, overlap, blend, batch_size)
    assert tiled.shape == whole.shape and tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)


def test_at_most_batch_size_windows_are_in_the_network_at_once():
    seen = []

    def predict(tiles):
        seen.append(tuple(tiles.shape))
        return tiles[:, :1]

    image = torch.rand(1, 3, 64, 64)
    out = sliding_window_inference(predict, image, window=16, overlap=0.5, batch_size=5)
    assert sum(s[0] for s in seen) == number_of_windows((64, 64), 16, 0.5) == 49
    assert max(s[0] for s in seen) == 5 and all(s[1:] == (3, 16, 16) for s in seen)
    torch.testing.assert_close(out, image[:, :1])


def test_gaussian_weights_peak_at_the_centre_and_stay_positive():
    weights = blend_weights((16, 9))
    assert weights.shape == (16, 9) and float(weights.max()) == pytest.approx(1.0, abs=1e-3)
    assert float(weights.min()) >= 1e-3
    assert float(weights[8, 4]) > float(weights[0, 0])
    assert torch.equal(blend_weights((3, 4), "constant"), torch.ones(3, 4))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(window=0), ValueError, "`window` must be >= 1"),
    (dict(window=(4, 4, 4)), ValueError, "`window` must be an int or a pair"),
    (dict(window="big"), TypeError, "`window` must be an int or a pair"),
    (dict(window=4, overlap=1.0), ValueError, r"`overlap` must be a number in \[0, 1\)"),
    (dict(window=4, blend="linear"), ValueError, "`blend` must be one of"),
    (dict(window=4, batch_size=0), ValueError, "`batch_size` must be an int >= 1"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        sliding_window_inference(lambda x: x, torch.rand(1, 1, 8, 8), **kwargs)


def test_bad_image_and_bad_predict_output():
    with pytest.raises(ValueError, match=r"`image` must have shape \(B, C, H, W\)"):
        sliding_window_inference(lambda x: x, torch.rand(8, 8), 4)
    with pytest.raises(ValueError, match="`predict` must return"):
        sliding_window_inference(lambda x: x[..., :-1, :], torch.rand(1, 1, 8, 8), 4)


def test_non_callable_predict_integer_image_and_non_tensor_output_are_named():
    with pytest.raises(TypeError, match="`predict` must be callable"):
        sliding_window_inference(torch.nn.Identity().state_dict(), torch.rand(1, 1, 8, 8), 4)
    with pytest.raises(TypeError, match=r"`image` must be a real floating-point tensor .* torch.int64"):
        sliding_window_inference(lambda x: x, torch.ones(1, 1, 8, 8, dtype=torch.int64), 4)
    with pytest.raises(TypeError, match="`predict` must return a floating-point torch.Tensor; got list"):
        sliding_window_inference(lambda x: [x], torch.rand(1, 1, 8, 8), 4)
    with pytest.raises(TypeError, match="`predict` must return a floating-point torch.Tensor; got torch.bool"):
        sliding_window_inference(lambda x: x > 0.5, torch.rand(1, 1, 8, 8), 4)
