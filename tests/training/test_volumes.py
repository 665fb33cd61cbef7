"""Volumes in training: random patches, sliding windows over volumes, and bad volume input."""
import numpy as np
import pytest
import torch

from satloss_gpu.training.data import DataError
from satloss_gpu.training.patches import VolumeDataset, random_patch
from satloss_gpu.training.sliding_window import number_of_windows, sliding_window_inference


def _write_split(base, split, volumes, labels, names=None):
    (base / split / "images").mkdir(parents=True, exist_ok=True)
    (base / split / "labels").mkdir(parents=True, exist_ok=True)
    for k, (image, label) in enumerate(zip(volumes, labels)):
        name = names[k] if names else f"{k:04d}"
        np.save(base / split / "images" / f"{name}.npy", image)
        np.save(base / split / "labels" / f"{name}.npy", label)


def _volume(shape, seed):
    rng = np.random.default_rng(seed)
    image = rng.random(shape, dtype=np.float32)
    return image, (image > 0.7).astype(np.uint8)


@pytest.fixture
def volumes(tmp_path):
    base = tmp_path / "vols"
    pairs = [_volume(shape, k) for k, shape in enumerate([(12, 14, 16), (16, 12, 13), (20, 20, 12)])]
    _write_split(base, "train", *zip(*pairs))
    return tmp_path, pairs


def test_a_patch_is_the_volume_and_label_at_one_place(volumes):
    _, pairs = volumes
    image, label = pairs[0]
    rng = np.random.default_rng(3)
    for _ in range(20):
        patch, patch_label = random_patch(image[None], label, 9, rng)
        assert patch.shape == (1, 9, 9, 9) and patch_label.shape == (9, 9, 9)
        # find the corner independently: the one place where the patch equals the volume
        hits = [(z, y, x) for z in range(image.shape[0] - 8) for y in range(image.shape[1] - 8)
                for x in range(image.shape[2] - 8)
                if np.array_equal(image[z:z + 9, y:y + 9, x:x + 9], patch[0])]
        assert len(hits) == 1
        z, y, x = hits[0]
        assert np.array_equal(label[z:z + 9, y:y + 9, x:x + 9], patch_label)


def test_training_samples_are_reproducible_patches_with_flips(volumes):
    root, pairs = volumes
    data = VolumeDataset(root, "vols", "train", crop=8, augment=True, seed=5)
    assert len(data) == 3 and data.channels == 1 and data.spatial_dims == 3
    assert data.check(require_foreground=True) == [p[1].shape for p in pairs]
    first = data[1]
    assert first["image"].shape == (1, 8, 8, 8) and first["label"].shape == (1, 8, 8, 8)
    assert first["image"].dtype == torch.float32 and set(first["label"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(data[1]["image"], first["image"], rtol=0, atol=0)
    data.set_epoch(1)
    assert not torch.equal(data[1]["image"], first["image"])
    # the label patch is the thresholded image patch, flips included
    sample = data[2]
    assert torch.equal(sample["label"], (sample["image"] > 0.7).float())
    whole = VolumeDataset(root, "vols", "train")
    image, label = whole.load(0)
    assert image.shape == (1, 12, 14, 16) and label.dtype == bool
    assert whole.as_batch(image).shape == (1, 1, 12, 14, 16)


def _voxelwise_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 4, 1), torch.nn.Tanh(),
                               torch.nn.Conv3d(4, 3, 1), torch.nn.Sigmoid()).eval()


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("window,overlap,batch_size", [(4, 0.0, 1), (6, 0.5, 3), ((3, 7, 20), 0.25, 64)])
def test_windows_reassemble_a_voxelwise_models_whole_volume_output(blend, window, overlap,
                                                                   batch_size):
    net = _voxelwise_model()
    volume = torch.rand(2, 2, 9, 13, 11)
    with torch.no_grad():
        whole = net(volume)
        tiled = sliding_window_inference(net, volume, window, overlap, blend, batch_size)
    assert tiled.shape == whole.shape == (2, 3, 9, 13, 11)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)


def test_every_voxel_is_covered_and_counted_once_per_window():
    seen = []

    def ones(tiles):
        seen.append(tuple(tiles.shape))
        return torch.ones_like(tiles[:, :1])

    volume = torch.rand(1, 1, 10, 17, 9)
    out = sliding_window_inference(ones, volume, 4, overlap=0.5, blend="constant", batch_size=5)
    assert torch.equal(out, torch.ones_like(out))
    assert sum(s[0] for s in seen) == number_of_windows((10, 17, 9), 4, 0.5) == 4 * 8 * 4
    assert all(s[2:] == (4, 4, 4) for s in seen)


def test_one_window_over_the_whole_volume_is_the_whole_volume_output():
    from satloss_gpu.training.models import UNet3D

    torch.manual_seed(1)
    net = UNet3D(widths=(4, 8)).eval()
    volume = torch.rand(1, 1, 8, 10, 12)
    with torch.no_grad():
        whole = net(volume)
        tiled = sliding_window_inference(net, volume, window=(8, 10, 12))
    torch.testing.assert_close(tiled, whole, rtol=1e-6, atol=1e-7)


def test_bad_windows_for_volumes_are_named():
    with pytest.raises(ValueError, match="`window` must be an int or a triple"):
        sliding_window_inference(lambda x: x, torch.rand(1, 1, 8, 8, 8), (4, 4))
    with pytest.raises(ValueError, match=r"\(N, K, d, h, w\)"):
        sliding_window_inference(lambda x: x[..., :-1], torch.rand(1, 1, 8, 8, 8), 4)


def test_bad_volume_folders_are_refused_naming_the_file(tmp_path):
    base = tmp_path / "bad"
    image, label = _volume((10, 10, 10), 0)
    _write_split(base, "train", [image, image[None].repeat(2, 0)], [label, label], ["a", "b"])
    with pytest.raises(DataError, match="channel"):
        VolumeDataset(tmp_path, "bad", "train")
    _write_split(base, "val", [image], [label[:, :9]])
    with pytest.raises(DataError, match=r"val/labels/0000\.npy has size"):
        VolumeDataset(tmp_path, "bad", "val")
    _write_split(base, "test", [image], [np.full((10, 10, 10), "x")])
    with pytest.raises(DataError, match="dtype"):
        VolumeDataset(tmp_path, "bad", "test")


def test_volumes_smaller_than_the_patch_and_empty_labels_are_refused(volumes):
    root, _ = volumes
    with pytest.raises(DataError, match=r"smaller than the patch --crop 13 .*--crop 12 or less"):
        VolumeDataset(root, "vols", "train", crop=13).check()
    empty = root / "empty"
    image, label = _volume((8, 8, 8), 1)
    _write_split(empty, "train", [image], [np.zeros_like(label)])
    with pytest.raises(DataError, match="every label .* is empty"):
        VolumeDataset(root, "empty", "train").check(require_foreground=True)


def test_a_split_of_images_is_not_read_as_volumes(tmp_path):
    import imageio.v3 as iio

    for folder in ("train", "train_labels"):
        (tmp_path / "flat" / folder).mkdir(parents=True)
        iio.imwrite(tmp_path / "flat" / folder / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="split of 2D images .* --spatial_dims 2"):
        VolumeDataset(tmp_path, "flat", "train")


def test_foreground_patches_hold_the_chosen_foreground_voxel():
    label = np.zeros((30, 30, 30), np.uint8)
    label[2, 27, 15] = 1                                  # one voxel, near two faces
    image = np.arange(label.size, dtype=np.float32).reshape(1, *label.shape)
    rng = np.random.default_rng(0)
    for _ in range(10):
        patch, patch_label = random_patch(image, label, 8, rng, foreground=1.0)
        assert patch_label.sum() == 1 and patch.shape == (1, 8, 8, 8)
    uniform = sum(random_patch(image, label, 8, rng)[1].sum() for _ in range(50))
    assert uniform < 10                                   # uniform patches rarely hit it
    with pytest.raises(ValueError, match="`foreground` must be in"):
        VolumeDataset(".", "x", "train", foreground=2.0)
