"""Synthetic data, the retina demo set, reading, binarisation, pairing and augmentation."""
import hashlib
import json

import imageio.v3 as iio
import numpy as np
import pytest

from satloss_gpu.training import synthetic
from satloss_gpu.training.data import DataError, SegmentationDataset, pair_files, read_image, read_label
from satloss_gpu.metrics import betti_numbers


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_generate_is_deterministic_and_labels_are_thin_structures(kind):
    image, label = synthetic.generate(kind, (48, 40), seed=3)
    again_image, again_label = synthetic.generate(kind, (48, 40), seed=3)
    other_image, other_label = synthetic.generate(kind, (48, 40), seed=4)
    assert image.shape == label.shape == (48, 40)
    assert image.dtype == np.float32 and label.dtype == bool
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(label, again_label)
    assert not np.array_equal(label, other_label)
    assert 0.01 < label.mean() < 0.5                 # thin: a minority of the pixels
    # the structure is visible: its mean intensity differs from the background's
    assert abs(image[label].mean() - image[~label].mean()) > 0.03


def test_membranes_have_loops():
    labels = np.stack([synthetic.generate("membranes", (64, 64), seed=s)[1] for s in range(4)])
    assert betti_numbers(labels)[:, 1].sum() >= 6     # closed cells away from the border
    assert (betti_numbers(labels, pad=True)[:, 1] >= 5).all()


def test_generate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`kind` must be one of"):
        synthetic.generate("spaghetti")
    with pytest.raises(ValueError, match="`size` must be at least"):
        synthetic.generate("roads", (4, 4))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_make_dataset_layout_and_reproducibility(tmp_path):
    root = synthetic.make_dataset(tmp_path / "a", "syn", "mixed", 3, 1, 2, (32, 32), seed=5)
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == [f"{i:04d}.png" for i in range(n)]
        assert sorted(p.name for p in (root / f"{split}_labels").iterdir()) == [f"{i:04d}.png" for i in range(n)]
    label = iio.imread(root / "train_labels" / "0000.png")
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 255}
    assert (root / "dataset.json").exists()
    # Same seed: same bytes; image i does not depend on how many images are made.
    again = synthetic.make_dataset(tmp_path / "b", "syn", "mixed", 2, 1, 1, (32, 32), seed=5)
    assert {k: v for k, v in _digest(root / "train").items() if k in ("0000.png", "0001.png")} == \
        _digest(again / "train")
    other = synthetic.make_dataset(tmp_path / "c", "syn", "mixed", 2, 1, 1, (32, 32), seed=6)
    assert _digest(other / "train") != _digest(again / "train")


def test_make_dataset_writes_no_folder_for_an_empty_split(tmp_path):
    root = synthetic.make_dataset(tmp_path, "d", n_train=2, n_val=0, n_test=0, size=(16, 16))
    assert sorted(p.name for p in root.iterdir()) == ["dataset.json", "train", "train_labels"]
    assert json.loads((root / "dataset.json").read_text())["files"] == [
        "train/0000.png", "train_labels/0000.png", "train/0001.png", "train_labels/0001.png"]


def test_make_dataset_never_replaces_files_it_did_not_write(tmp_path):
    root = synthetic.make_dataset(tmp_path, "d", n_train=3, n_val=1, n_test=1, size=(16, 16))
    with pytest.raises(ValueError, match=r"is not empty \(11 files\); pass overwrite=True"):
        synthetic.make_dataset(tmp_path, "d", n_train=1, n_val=0, n_test=0, size=(16, 16))
    synthetic.make_dataset(tmp_path, "d", n_train=1, n_val=0, n_test=1, size=(16, 16), overwrite=True)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["dataset.json", "test/0000.png", "test_labels/0000.png", "train/0000.png",
                     "train_labels/0000.png"]            # no stale images, no empty val folder
    (root / "train" / "mine.png").write_bytes(b"user data")
    with pytest.raises(ValueError, match=r"1 file\(s\) that its dataset.json does not list.*mine\.png"):
        synthetic.make_dataset(tmp_path, "d", n_train=2, size=(16, 16), overwrite=True)
    assert (root / "train" / "mine.png").read_bytes() == b"user data"
    assert (root / "train" / "0000.png").is_file()      # nothing removed when refused
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="does not list"):
        synthetic.make_dataset(tmp_path, "user", n_train=1, size=(16, 16), overwrite=True)
    assert (tmp_path / "user" / "notes.txt").read_text() == "mine"


def test_only_missing_builtin_datasets_are_generated(tmp_path):
    assert synthetic.dataset_to_generate(tmp_path, "synthetic", True) == "mixed"
    assert synthetic.dataset_to_generate(tmp_path, "vessels", True) == "vessels"
    with pytest.raises(DataError, match=r"--dataset mydata; looked for .*mydata.train and "
                                        r".*mydata.train_labels; no dataset in"):
        synthetic.dataset_to_generate(tmp_path, "mydata", True)
    with pytest.raises(DataError, match="pass --make_data"):
        synthetic.dataset_to_generate(tmp_path, "synthetic", False)
    (tmp_path / "mydata").mkdir()
    assert synthetic.dataset_to_generate(tmp_path, "mydata", False) is None   # exists: read it


def test_retina_dataset_has_pseudo_labels(tmp_path):
    root = synthetic.make_retina_dataset(tmp_path, "retina", tile=64, scale=0.25)
    names = [p.name for split in ("train", "val", "test") for p in (root / split).iterdir()]
    assert len(names) >= 10 and len(set(names)) == len(names)
    ds = SegmentationDataset(tmp_path, "retina", "train")
    ds.check()
    labels = np.stack([ds.load(i)[1] for i in range(len(ds))])
    assert 0.02 < labels.mean() < 0.3
    image = ds.load(0)[0]
    assert image.shape == (64, 64, 3) and image.dtype == np.float32


# --------------------------------------------------------------------------- reading and labels
@pytest.mark.parametrize("array, expected", [
    (np.array([[0, 255], [255, 0]], np.uint8), [[0, 1], [1, 0]]),
    (np.array([[0, 1], [1, 0]], np.uint8), [[0, 1], [1, 0]]),
    (np.pad(np.array([[0, 200], [128, 127]], np.uint8), ((0, 18), (0, 18))),
     np.pad(np.array([[0, 1], [1, 0]]), ((0, 18), (0, 18)))),     # 2 grey pixels of 400: < 1%
    (np.array([[0, 65535], [0, 60000]], np.uint16), [[0, 1], [0, 1]]),
])
def test_read_label_binarisation_rule(tmp_path, array, expected):
    path = tmp_path / "label.png"
    iio.imwrite(path, array)
    np.testing.assert_array_equal(read_label(path), np.array(expected, bool))


def test_read_label_colour_and_float(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 1] = (255, 0, 0)
    iio.imwrite(tmp_path / "c.png", rgb)
    assert read_label(tmp_path / "c.png").sum() == 1
    f = np.array([[0.0, 0.9], [0.2, 1.0]], np.float32)
    iio.imwrite(tmp_path / "f.tif", f)
    np.testing.assert_array_equal(read_label(tmp_path / "f.tif"), [[0, 1], [0, 1]])


@pytest.mark.parametrize("channels", [2, 4])   # grey + alpha, RGBA
def test_alpha_channel_is_not_read_as_foreground(tmp_path, channels):
    """An opaque alpha channel (255 everywhere) made every pixel foreground."""
    array = np.zeros((6, 5, channels), np.uint8)
    array[1:3, 2, :-1] = 255
    array[..., -1] = 255
    iio.imwrite(tmp_path / "a.png", array)
    expected = np.zeros((6, 5), bool)
    expected[1:3, 2] = True
    np.testing.assert_array_equal(read_label(tmp_path / "a.png"), expected)
    image = read_image(tmp_path / "a.png")
    assert image.shape == (6, 5, 3)
    np.testing.assert_array_equal(image[..., 0], expected.astype(np.float32))


def test_read_label_tolerates_jpeg_noise_but_rejects_grey_images(tmp_path):
    noisy = np.where(np.eye(32, dtype=bool), 250, 4).astype(np.uint8)
    iio.imwrite(tmp_path / "noisy.png", noisy)
    assert read_label(tmp_path / "noisy.png").sum() == 32
    grey = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    iio.imwrite(tmp_path / "grey.png", grey)
    with pytest.raises(DataError, match=r"grey\.png is not binary"):
        read_label(tmp_path / "grey.png")


@pytest.mark.parametrize("array", [
    np.array([[0, 2], [2, 0]], np.uint8),             # class ids 0/2
    np.array([[0, 255], [255, 0]], np.uint16),        # 16-bit 0/255
    np.array([[0, 1], [1, 0]], np.uint16),
    np.array([[0, 7], [7, 0]], np.int32),
    np.array([[0.0, 255.0], [255.0, 0.0]], np.float32),
])
def test_read_label_two_values_with_zero_nonzero_is_foreground(tmp_path, array):
    path = tmp_path / ("label.tif" if array.dtype.kind in "fi" else "label.png")
    iio.imwrite(path, array)
    np.testing.assert_array_equal(read_label(path), [[0, 1], [1, 0]])


@pytest.mark.parametrize("array, fragment", [
    (np.array([[0, 1], [2, 1]], np.uint8), "none near the full scale"),           # class ids 0/1/2
    (np.array([[0, 1], [2, 3]], np.uint16), "none near the full scale"),
    (np.array([[1, 2], [2, 1]], np.uint8), "none near the full scale"),       # class ids 1/2
    (np.array([[0, 1], [2, 3]], np.int32), "distinct values"),
    (np.array([[0.0, 0.5], [2.0, 1.0]], np.float32), "distinct values"),
    (np.array([[0.0, -1.0], [1.0, 1.0]], np.float32), "negative"),
])
def test_read_label_refuses_ambiguous_encodings(tmp_path, array, fragment):
    path = tmp_path / ("label.tif" if array.dtype.kind in "fi" else "label.png")
    iio.imwrite(path, array)
    with pytest.raises(DataError, match=fragment):
        read_label(path)


def test_empty_label_sets_are_refused_for_training_and_warned_otherwise(tmp_path):
    for name in "ab":
        _write_pair(tmp_path / "ds", name, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    ds = SegmentationDataset(tmp_path, "ds", "train")
    with pytest.raises(DataError, match=r"every label of the 2 in .*train_labels is empty"):
        ds.check(require_foreground=True)
    with pytest.warns(UserWarning, match="is empty"):
        ds.check()
    label = np.zeros((8, 8), np.uint8)
    label[2, 3] = 2
    _write_pair(tmp_path / "ds", "b", np.zeros((8, 8), np.uint8), label)
    assert SegmentationDataset(tmp_path, "ds", "train").check(require_foreground=True) == [(8, 8)] * 2


def test_read_image_converts_to_rgb_float(tmp_path):
    iio.imwrite(tmp_path / "g.png", np.full((5, 6), 255, np.uint8))
    image = read_image(tmp_path / "g.png")
    assert image.shape == (5, 6, 3) and image.dtype == np.float32 and image.max() == 1.0
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.png"):
        read_image(tmp_path / "bad.png")


def _write_pair(folder, name, image, label, ext=".png"):
    (folder / "train").mkdir(parents=True, exist_ok=True)
    (folder / "train_labels").mkdir(parents=True, exist_ok=True)
    iio.imwrite(folder / "train" / f"{name}{ext}", image)
    iio.imwrite(folder / "train_labels" / f"{name}.png", label)


def test_pair_files_pairs_by_name_and_reports_partners_missing(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    _write_pair(tmp_path / "d", "a", image, image, ext=".jpg")
    _write_pair(tmp_path / "d", "b", image, image)
    pairs = pair_files(tmp_path / "d" / "train", tmp_path / "d" / "train_labels")
    assert [(n, i.name, l.name) for n, i, l in pairs] == [("a", "a.jpg", "a.png"), ("b", "b.png", "b.png")]
    iio.imwrite(tmp_path / "d" / "train" / "c.png", image)
    with pytest.raises(DataError, match=r"1 image\(s\) without a label in .*train_labels: c\.png"):
        pair_files(tmp_path / "d" / "train", tmp_path / "d" / "train_labels")
    with pytest.raises(DataError, match=r"dataset folder not found: .*nowhere"):
        pair_files(tmp_path / "nowhere", tmp_path / "d" / "train_labels")


def test_dataset_shape_mismatch_is_reported(tmp_path):
    _write_pair(tmp_path, "a", np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8))
    ds = SegmentationDataset(tmp_path.parent, tmp_path.name, "train")
    with pytest.raises(DataError, match=r"a\.png has shape \(8, 9\) but its image"):
        ds.check()


def test_crops_and_flips_keep_image_and_label_aligned(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        label = rng.random((20, 20)) < 0.3
        _write_pair(tmp_path / "ds", f"{i}", label.astype(np.uint8) * 255, label.astype(np.uint8) * 255)
    ds = SegmentationDataset(tmp_path, "ds", "train", crop=16, augment=True, seed=1)
    ds.check()
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (3, 16, 16) and item["label"].shape == (1, 16, 16)
            np.testing.assert_array_equal(item["image"][0].numpy(), item["label"][0].numpy())
            seen.add(item["image"].numpy().tobytes())
    assert len(seen) > 6                              # crops and flips change with the epoch
    ds.set_epoch(2)
    np.testing.assert_array_equal(ds[1]["image"], ds[1]["image"])   # reproducible
    big = SegmentationDataset(tmp_path, "ds", "train", crop=32)
    with pytest.warns(UserWarning, match=r"3 of the 3 images .* smaller than the crop 32 .*--crop 20"):
        big.check()
    assert big[0]["image"].shape == (3, 32, 32)      # smaller images are padded first
    with pytest.raises(ValueError, match="`crop` must be a positive int"):
        SegmentationDataset(tmp_path, "ds", "train", crop=0)


def test_fill_small_holes_fills_only_small_enclosed_regions():
    mask = np.zeros((20, 20), bool)
    mask[1:5, 1:5] = True
    mask[2, 2] = False  # a 1-pixel hole
    mask[8:16, 8:16] = True
    mask[9:15, 9:15] = False  # a 36-pixel hole
    mask[0:3, 17:20] = True
    filled = synthetic.fill_small_holes(mask, max_area=16)
    assert filled[2, 2] and not filled[10, 10]
    assert (filled & ~mask).sum() == 1
    assert betti_numbers(mask).tolist() == [3, 2] and betti_numbers(filled).tolist() == [3, 1]


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_labels_have_no_spurious_small_holes(kind):
    """beta1 of the labels (this package's persistence) counts holes larger than
    MIN_HOLE_AREA only, and drawing without the filling would have had small ones."""
    from scipy import ndimage

    small_before = 0
    for seed in range(6):
        _, label = synthetic.generate(kind, (96, 96), seed=seed)
        regions, n = ndimage.label(~label)
        areas = np.bincount(regions.ravel(), minlength=n + 1)
        border = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
        holes = [k for k in range(1, n + 1) if k not in border]
        assert all(areas[k] > synthetic.MIN_HOLE_AREA for k in holes), (kind, seed)
        assert betti_numbers(label)[1] == len(holes)
        rng = np.random.default_rng(seed)
        raw = synthetic._STRUCTURES[kind](rng, (96, 96))
        small_before += int(betti_numbers(raw)[1] - betti_numbers(synthetic.fill_small_holes(raw))[1])
    if kind != "membranes":
        assert small_before > 0  # the filling has work to do on these kinds
