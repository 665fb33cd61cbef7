"""Generated vessel volumes, the volume folder layout and its reader."""
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from satloss_gpu.training.data import DataError
from satloss_gpu.metrics import betti_numbers
from satloss_gpu.training.synthetic3d import (close_slits, fill_cavities, generate_volume,
                                              load_volume_folder, make_volume_dataset,
                                              max_intensity_projection)

gudhi = pytest.importorskip("gudhi")


def _gudhi_betti(label):
    """(beta0, beta1, beta2) of the union of closed foreground voxels."""
    cc = gudhi.CubicalComplex(top_dimensional_cells=1.0 - label.astype(np.float64))
    cc.compute_persistence()
    return tuple(cc.persistent_betti_numbers(0.0, 0.0)[:3])


def _cavities(label):
    """Number of 6-connected background components that touch no face."""
    regions, n = ndi.label(label == 0, structure=ndi.generate_binary_structure(3, 1))
    faces = np.concatenate([regions[0].ravel(), regions[-1].ravel(), regions[:, 0].ravel(),
                            regions[:, -1].ravel(), regions[:, :, 0].ravel(),
                            regions[:, :, -1].ravel()])
    return n - len(set(faces.tolist()) - {0})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_volume_has_thin_vessels_without_cavities(seed):
    image, label = generate_volume(size=(32, 40, 36), seed=seed)
    assert image.shape == label.shape == (32, 40, 36)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert set(np.unique(label).tolist()) == {0, 1}
    assert 0.001 < label.mean() < 0.2
    assert _cavities(label) == 0
    b0, b1, b2 = _gudhi_betti(label)
    assert b2 == 0 and b0 >= 1
    assert b0 == ndi.label(label, structure=np.ones((3, 3, 3)))[1]
    depth = ndi.distance_transform_edt(np.pad(label, 1))
    assert 1.0 <= depth.max() <= 4.0            # radii of 1 to 3 voxels (balls overlap)
    assert image[label == 1].mean() > image[label == 0].mean() + 0.05


def test_generation_is_deterministic_and_gaps_touch_only_the_image():
    a = generate_volume(size=(16, 24, 20), seed=(3, 1))
    b = generate_volume(size=(16, 24, 20), seed=(3, 1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    no_gaps = generate_volume(size=(16, 24, 20), seed=(3, 1), gaps=False)
    np.testing.assert_array_equal(no_gaps[1], a[1])
    assert not np.array_equal(generate_volume(size=(16, 24, 20), seed=4)[1], a[1])


def test_generate_volume_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`size` must be"):
        generate_volume(size=(64, 64))
    with pytest.raises(ValueError, match="`size` must be"):
        generate_volume(size=(4, 64, 64))
    with pytest.raises(ValueError, match="`kind` must be one of"):
        generate_volume("roads")
    with pytest.raises(TypeError, match="`gaps`"):
        generate_volume(gaps=1)


def test_fill_cavities_fills_enclosed_background_only():
    shell = np.zeros((9, 9, 9), bool)
    shell[1:8, 1:8, 1:8] = True
    shell[3:6, 3:6, 3:6] = False          # a cavity
    shell[4, 4, 0:2] = False              # a tunnel from the face: not a cavity
    filled = fill_cavities(shell)
    assert filled[3:6, 3:6, 3:6].all() and not filled[4, 4, 0]
    # background touching only along an edge is a separate (6-connected) cavity
    corner = np.ones((6, 6, 6), bool)
    corner[2, 2, 2] = corner[3, 3, 2] = False
    assert fill_cavities(corner).all()


def test_close_slits_fills_one_voxel_tunnels_only():
    block = np.ones((4, 7, 7), bool)
    slit = block.copy()
    slit[:, 3, 3] = False                     # a tunnel one voxel wide
    wide = block.copy()
    wide[:, 2:5, 2:5] = False                 # a tunnel three voxels wide
    assert _gudhi_betti(slit)[1] == 1 and _gudhi_betti(wide)[1] == 1
    assert close_slits(slit).all()
    assert _gudhi_betti(close_slits(wide)) == (1, 1, 0)     # rounded corners, still a tunnel
    assert not close_slits(wide)[:, 3, 3].any()
    rng = np.random.default_rng(0)
    noise = rng.random((6, 7, 8)) < 0.4
    assert (close_slits(noise) >= noise).all()    # only adds voxels
    assert betti_numbers(close_slits(slit).astype(np.uint8), spatial_dims=3).tolist() == [1, 0, 0]


def _tree(base):
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def test_make_volume_dataset_layout_record_and_overwrite(tmp_path):
    base = make_volume_dataset(tmp_path, "v", n_train=2, n_val=1, n_test=0, size=(16, 16, 12),
                               seed=5)
    assert _tree(base) == ["dataset.json", "train/images/0000.npy", "train/images/0001.npy",
                           "train/labels/0000.npy", "train/labels/0001.npy",
                           "val/images/0000.npy", "val/labels/0000.npy"]
    record = json.loads((base / "dataset.json").read_text())
    assert record["spatial_dims"] == 3 and record["size"] == [16, 16, 12]
    assert sorted(record["files"]) == _tree(base)[1:]
    image, label = generate_volume(size=(16, 16, 12), seed=(5, 0, 1))
    np.testing.assert_array_equal(np.load(base / "train/images/0001.npy"), image)
    np.testing.assert_array_equal(np.load(base / "train/labels/0001.npy"), label)
    with pytest.raises(ValueError, match="not empty"):
        make_volume_dataset(tmp_path, "v", n_train=1, size=(16, 16, 12))
    make_volume_dataset(tmp_path, "v", n_train=1, n_val=0, n_test=0, size=(16, 16, 12),
                        overwrite=True)
    assert _tree(base) == ["dataset.json", "train/images/0000.npy", "train/labels/0000.npy"]
    assert not (base / "val").exists()
    (base / "train" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        make_volume_dataset(tmp_path, "v", n_train=1, size=(16, 16, 12), overwrite=True)
    assert (base / "train" / "notes.txt").exists() and (base / "train/images/0000.npy").exists()
    with pytest.raises(ValueError, match="`n_train` must be an int >= 1"):
        make_volume_dataset(tmp_path, "w", n_train=0)


def test_load_volume_folder_reads_the_layout(tmp_path):
    base = make_volume_dataset(tmp_path, "v", n_train=2, n_val=0, n_test=0, size=(12, 16, 8))
    folder = load_volume_folder(base / "train", same_shape=True)
    assert folder.names == ["0000", "0001"]
    assert folder.images[0].shape == (1, 12, 16, 8) and folder.images[0].dtype == np.float32
    np.testing.assert_array_equal(folder.images[1][0], np.load(base / "train/images/0001.npy"))
    np.testing.assert_array_equal(folder.labels[0], np.load(base / "train/labels/0000.npy"))


def _write(split, name, image, label):
    (split / "images").mkdir(parents=True, exist_ok=True)
    (split / "labels").mkdir(parents=True, exist_ok=True)
    np.save(split / "images" / f"{name}.npy", image)
    np.save(split / "labels" / f"{name}.npy", label)


def test_load_volume_folder_own_volumes_npz_uint8_and_0_255(tmp_path):
    split = tmp_path / "train"
    label = np.zeros((5, 6, 7), np.uint8)
    label[2, 1:5, 3] = 255
    (split / "images").mkdir(parents=True)
    (split / "labels").mkdir(parents=True)
    image = np.arange(2 * 5 * 6 * 7, dtype=np.uint16).reshape(2, 5, 6, 7)
    np.savez(split / "images" / "a.npz", image=image)
    np.save(split / "labels" / "a.npy", label)
    folder = load_volume_folder(split)
    assert folder.images[0].shape == (2, 5, 6, 7)
    np.testing.assert_allclose(folder.images[0], image / 65535.0, rtol=1e-6)
    np.testing.assert_array_equal(folder.labels[0], label // 255)


def test_load_volume_folder_errors_name_the_file(tmp_path):
    good = np.zeros((4, 5, 6), np.float32), np.zeros((4, 5, 6), np.uint8)
    with pytest.raises(DataError, match="does not exist"):
        load_volume_folder(tmp_path / "nowhere")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "images").mkdir()
    (flat / "images" / "0000.png").write_bytes(b"")
    with pytest.raises(DataError, match="is this a 2D dataset"):
        load_volume_folder(flat)
    two_d = tmp_path / "two_d"
    _write(two_d, "a", np.zeros((5, 6), np.float32), np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError, match=r"a.npy holds a 2D image \(5, 6\)"):
        load_volume_folder(two_d)
    mixed = tmp_path / "mixed"
    _write(mixed, "a", *good)
    _write(mixed, "b", np.zeros((4, 5, 7), np.float32), np.zeros((4, 5, 7), np.uint8))
    assert len(load_volume_folder(mixed).names) == 2
    with pytest.raises(DataError, match="mixed sizes"):
        load_volume_folder(mixed, same_shape=True)
    cases = {
        "size": (good[0], np.zeros((4, 5, 5), np.uint8), r"has size \(4, 5, 5\) but its image"),
        "dtype": (good[0].astype(np.complex64), good[1], "bool, integer or float volume"),
        "nan": (np.full((4, 5, 6), np.nan, np.float32), good[1], "NaN"),
        "binary": (good[0], np.full((4, 5, 6), 2, np.uint8), "binary label"),
        "label2d": (good[0], np.zeros((5, 6), np.uint8), "2D label"),
    }
    for case, (image, label, message) in cases.items():
        _write(tmp_path / case, "x", image, label)
        with pytest.raises(DataError, match=message):
            load_volume_folder(tmp_path / case)
    unpaired = tmp_path / "unpaired"
    _write(unpaired, "a", *good)
    np.save(unpaired / "images" / "b.npy", good[0])
    with pytest.raises(DataError, match="b has no file of the same name"):
        load_volume_folder(unpaired)
    channels = tmp_path / "channels"
    _write(channels, "a", *good)
    _write(channels, "b", np.zeros((2, 4, 5, 6), np.float32), good[1])
    with pytest.raises(DataError, match="channel"):
        load_volume_folder(channels)
    archive = tmp_path / "archive"
    _write(archive, "a", *good)
    np.savez(archive / "images" / "b.npz", x=good[0], y=good[0])
    np.save(archive / "labels" / "b.npy", good[1])
    with pytest.raises(DataError, match="exactly one array"):
        load_volume_folder(archive)
    with pytest.raises(TypeError, match="`same_shape`"):
        load_volume_folder(archive, same_shape="yes")


def test_max_intensity_projection_figure(tmp_path):
    image, label = generate_volume(size=(12, 16, 20), seed=0)
    fig = max_intensity_projection(image, label, pred=label * 0.7)
    assert len(fig.axes) == 9
    path = tmp_path / "mip.png"
    max_intensity_projection(image[None], label, path=path, title="t")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="`pred` must have the image's size"):
        max_intensity_projection(image, pred=label[:-1])
