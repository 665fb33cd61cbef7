"""cubical_persistence(spatial_dims=3): input checks, output types, gradients, the container,
and the images path unchanged (spatial_dims=2, volumes of depth 1).

The behaviour checks run on the gudhi backend, so that they test the API (validation,
assembly, container) whatever the state of the compiled backends; the depth-1 checks run on
every backend that computes volumes.
"""
import numpy as np
import pytest
import torch

from satloss_gpu import PersistenceDiagrams, cubical_persistence
from satloss_gpu.persistence import backends
from satloss_gpu.persistence.backends import PersistenceBackend


def canonical(dg: PersistenceDiagrams) -> list:
    """Sorted (image, dim, birth, death, birth pixel, death pixel) of every pair."""
    d = dg.to_numpy()
    rows = zip(d.image.tolist(), d.dim.tolist(), d.birth.tolist(), d.death.tolist(),
               map(tuple, d.birth_pixel.tolist()), map(tuple, d.death_pixel.tolist()))
    return sorted(rows)


def volume(shape=(3, 4, 5), seed=0):
    return np.random.default_rng(seed).random(shape)


def with_value(value, shape=(2, 3, 3, 3)):
    out = np.zeros(shape)
    out[1, 1, 2, 0] = value
    return out


BAD_INPUTS = [
    # shapes
    (np.zeros((2, 3, 3, 3)), {}, ValueError,
     r"got shape \(2, 3, 3, 3\), which looks like a batch of volumes; pass spatial_dims=3"),
    (np.zeros((3, 3)), {"spatial_dims": 3}, ValueError, "an image; pass spatial_dims=2"),
    (np.zeros((1, 2, 3, 3, 3)), {"spatial_dims": 3}, ValueError,
     r"`images` must have shape \(D, H, W\) or \(B, D, H, W\); got shape \(1, 2, 3, 3, 3\)"),
    (np.zeros(5), {"spatial_dims": 3}, ValueError, r"\(D, H, W\) or \(B, D, H, W\)"),
    (np.zeros((0, 3, 3)), {"spatial_dims": 3}, ValueError, "`images` must not be empty"),
    (np.zeros((2, 3, 0, 3)), {"spatial_dims": 3}, ValueError, "`images` must not be empty"),
    (np.zeros((2, 3, 3, 3, 3)), {}, ValueError, r"\(H, W\) or \(B, H, W\)"),
    # values
    (with_value(np.nan), {"spatial_dims": 3}, ValueError, "`images` must be finite; found 1 NaN"),
    (with_value(-np.inf), {"spatial_dims": 3}, ValueError, "found 0 NaN and 1 inf"),
    (np.zeros((2, 2, 2), dtype=complex), {"spatial_dims": 3}, TypeError,
     "`images` must hold real numbers"),
    # spatial_dims
    (np.zeros((2, 2, 2)), {"spatial_dims": 4}, ValueError,
     r"`spatial_dims` must be 2 \(images\) or 3 \(volumes\); got 4"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 1}, ValueError, "`spatial_dims` must be 2"),
    (np.zeros((2, 2, 2)), {"spatial_dims": True}, TypeError,
     "`spatial_dims` must be the int 2 .* got bool True"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3.0}, TypeError, "`spatial_dims` must be the int"),
    (np.zeros((2, 2, 2)), {"spatial_dims": "3"}, TypeError, "`spatial_dims` must be the int"),
    (np.zeros((2, 2, 2)), {"spatial_dims": None}, TypeError, "`spatial_dims` must be the int"),
    # dims
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "dims": (3,)}, ValueError,
     r"`dims` must be a non-empty subset of \(0, 1, 2\) for volumes"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "dims": (-1, 0)}, ValueError,
     r"subset of \(0, 1, 2\)"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "dims": ()}, ValueError, "non-empty subset"),
    (np.zeros((2, 2)), {"dims": (0, 2)}, ValueError,
     r"subset of \(0, 1\) for images .*dimension 2 needs volumes, spatial_dims=3"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "dims": (0, 1.0)}, TypeError,
     "`dims` must hold ints"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "dims": (True,)}, TypeError,
     "`dims` must hold ints"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "dims": "012"}, TypeError,
     "`dims` must be a sequence of ints"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "dims": 2}, TypeError,
     "`dims` must be a sequence of ints"),
    # other options
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "construction": "X"}, ValueError,
     "`construction` must be one of 'T', 'V'"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "superlevel": 1}, TypeError,
     "`superlevel` must be a bool"),
    (np.zeros((2, 2, 2)), {"spatial_dims": 3, "backend": "gpu"}, ValueError,
     "`backend` must be one of"),
]


@pytest.mark.parametrize("images, kwargs, error, match", BAD_INPUTS)
def test_bad_input_is_named(images, kwargs, error, match):
    with pytest.raises(error, match=match):
        cubical_persistence(images, **kwargs)


def test_torch_volume_with_nan_is_refused():
    volumes = torch.zeros(2, 3, 3, 3)
    volumes[0, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="`images` must be finite; found 1 NaN"):
        cubical_persistence(volumes, spatial_dims=3, backend="gudhi")


def test_numpy_integer_spatial_dims_is_accepted():
    dg = cubical_persistence(volume(), spatial_dims=np.int64(3), backend="gudhi")
    assert dg.spatial_dims == 3


class _ImagesOnly(PersistenceBackend):
    """A backend that computes images only (supports_volumes left False)."""

    name = "cuda"

    def asarray(self, images):
        return np.asarray(images)

    def pairs(self, images, construction, dims):  # pragma: no cover - never reached
        raise AssertionError("a backend without volume support was given volumes")


def test_a_backend_without_volume_support_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(backends._FACTORIES, "cuda", lambda: _ImagesOnly)
    monkeypatch.delitem(backends._INSTANCES, "cuda", raising=False)
    with pytest.raises(ValueError, match="`backend` 'cuda' does not compute volumes "
                                         r"\(spatial_dims=3\); use one of 'cpu', 'gudhi'"):
        cubical_persistence(volume(), spatial_dims=3, backend="cuda")


def test_the_cpu_size_limit_is_checked_before_the_values_are_read():
    """2^28 voxels (over the CPU kernel's limit) holding NaN: the size is named, not the NaN,
    and nothing of that size is allocated (a broadcast view)."""
    from satloss_gpu.kernels.cpu.local_pairing3d import MAX_VOXELS

    side = int(np.ceil(np.sqrt(MAX_VOXELS + 1)))
    huge = np.broadcast_to(np.float32(np.nan), (1, 1, side, side))
    with pytest.raises(ValueError, match=f"`images` must have at most {MAX_VOXELS} voxels per "
                                         "volume on the 'cpu' backend"):
        cubical_persistence(huge, spatial_dims=3, backend="cpu")


def test_the_gudhi_backend_refuses_a_complex_beyond_the_available_memory(monkeypatch):
    import satloss_gpu._validation as validation

    monkeypatch.setattr(validation, "available_memory", lambda: 10_000)
    with pytest.raises(MemoryError, match=r"`images` of shape \(1, 3, 4, 5\) on the 'gudhi' "
                                          "backend needs about"):
        cubical_persistence(volume(), spatial_dims=3, backend="gudhi")


# ----------------------------------------------------------------------------- images unchanged


def test_spatial_dims_2_is_the_default_path():
    images = np.random.default_rng(1).integers(0, 4, (3, 6, 7)).astype(np.float32)
    default = cubical_persistence(images)
    explicit = cubical_persistence(images, spatial_dims=2, dims=(0, 1))
    assert canonical(default) == canonical(explicit)
    np.testing.assert_array_equal(default.last_pixel, explicit.last_pixel)
    assert default.image_shape == (6, 7) and default.spatial_dims == 2
    assert default.birth_pixel.shape == (len(default), 2)
    assert default.counts().shape == (3, 2)
    assert set(default.dim.tolist()) <= {0, 1}


def test_images_keep_their_documented_example_and_repr():
    ring = np.zeros((3, 3))
    ring[1, 1] = 1.0
    dg = cubical_persistence(ring, spatial_dims=2)
    assert dg.birth_pixel.tolist() == [[0, 0], [2, 1]]
    assert dg.death_pixel.tolist() == [[-1, -1], [1, 1]]
    assert dg.last_pixel.tolist() == [[1, 1]]
    assert repr(dg) == ("PersistenceDiagrams(batch_size=1, image_shape=(3, 3), pairs=2 "
                        "(H0: 1, H1: 1), sublevel, library=numpy, dtype=float64)")


def test_images_on_the_gudhi_backend_are_unchanged():
    images = np.random.default_rng(2).random((2, 5, 4))
    for construction in ("T", "V"):
        ours = cubical_persistence(images, construction=construction, backend="gudhi")
        assert canonical(ours) == canonical(cubical_persistence(images, construction=construction))


# ----------------------------------------------------------------------------- depth 1


def _volume_backends():
    return ["gudhi", "cpu"]


@pytest.mark.parametrize("backend", _volume_backends())
@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_volume_of_depth_one_is_the_image(backend, construction, axis):
    """A one-voxel-thick volume is the image's complex times an interval (T) or the image's
    complex itself (V), and its flat indices are the image's: the same pairs, the same
    critical pixels with a 0 inserted at the thin axis, no H2, whatever the axis."""
    rng = np.random.default_rng(axis)
    images = rng.integers(0, 5, (2, 6, 7)).astype(np.float64)
    images[1] = rng.random((6, 7))
    volumes = np.expand_dims(images, axis + 1)
    for superlevel in (False, True):
        flat = cubical_persistence(images, construction=construction, superlevel=superlevel,
                                   backend=backend)
        thin = cubical_persistence(volumes, spatial_dims=3, construction=construction,
                                   superlevel=superlevel, backend=backend).to_numpy()
        assert thin.image_shape == volumes.shape[1:]
        assert (thin.birth_voxel[:, axis] == 0).all()
        assert (thin.death_voxel[:, axis] == np.where(thin.death_index < 0, -1, 0)).all()
        assert (thin.dim < 2).all()
        assert canonical(_drop_axis(thin, axis)) == canonical(flat)
        np.testing.assert_array_equal(np.delete(thin.last_voxel, axis, 1), flat.last_pixel)


def _drop_axis(dg: PersistenceDiagrams, axis: int) -> PersistenceDiagrams:
    """The 2D container of a depth-1 result: the thin axis removed from every coordinate."""
    shape = tuple(s for i, s in enumerate(dg.image_shape) if i != axis)
    return PersistenceDiagrams(
        image=dg.image, dim=dg.dim, birth=dg.birth, death=dg.death,
        birth_pixel=np.delete(dg.birth_pixel, axis, 1),
        death_pixel=np.delete(dg.death_pixel, axis, 1), batch_size=dg.batch_size,
        image_shape=shape, superlevel=dg.superlevel)


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("dtype, expected", [(np.float32, np.float32), (np.float64, np.float64),
                                             (np.int16, np.float64), (bool, np.float64)])
def test_numpy_outputs_shapes_and_dtypes(dtype, expected):
    volumes = (volume((2, 3, 4, 5)) * 3).astype(dtype)
    dg = cubical_persistence(volumes, spatial_dims=3, backend="gudhi")
    k = len(dg)
    assert dg.library == "numpy" and dg.birth.dtype == expected == dg.death.dtype
    for name in ("image", "dim"):
        assert getattr(dg, name).shape == (k,) and getattr(dg, name).dtype == np.int64
    for name in ("birth_pixel", "death_pixel"):
        assert getattr(dg, name).shape == (k, 3) and getattr(dg, name).dtype == np.int64
    assert dg.last_pixel.shape == (2, 3) and dg.last_pixel.dtype == np.int64
    assert dg.batch_size == 2 and dg.image_shape == (3, 4, 5) and dg.spatial_dims == 3
    essential = np.isinf(dg.death)
    assert essential.sum() == 2 and (dg.dim[essential] == 0).all()
    assert (dg.death_pixel[essential] == -1).all() and (dg.death_pixel[~essential] >= 0).all()
    assert (dg.birth != dg.death).all()


def test_a_single_volume_is_a_batch_of_one():
    single = cubical_persistence(volume(), spatial_dims=3, backend="gudhi")
    batch = cubical_persistence(volume()[None], spatial_dims=3, backend="gudhi")
    assert single.batch_size == 1 and canonical(single) == canonical(batch)


def test_torch_volumes_give_torch_outputs():
    volumes = torch.as_tensor(volume((2, 3, 4, 5)), dtype=torch.float32)
    dg = cubical_persistence(volumes, spatial_dims=3, backend="gudhi")
    assert dg.library == "torch" and dg.birth.dtype == torch.float32
    assert dg.birth_voxel.dtype == torch.int64 and tuple(dg.birth_voxel.shape) == (len(dg), 3)
    assert tuple(dg.last_voxel.shape) == (2, 3)
    expected = cubical_persistence(volumes.numpy(), spatial_dims=3, backend="gudhi")
    assert canonical(dg) == canonical(expected)
    np.testing.assert_array_equal(dg.last_voxel.numpy(), expected.last_voxel)
    integers = cubical_persistence(torch.ones(2, 2, 2, dtype=torch.int32), spatial_dims=3,
                                   backend="gudhi")
    assert integers.birth.dtype == torch.float32


def test_torch_gradients_reach_the_critical_voxels():
    """d(sum of births and finite deaths)/dx counts how often each voxel is critical."""
    x = torch.tensor(volume((2, 4, 3, 5), seed=3), requires_grad=True)
    dg = cubical_persistence(x, spatial_dims=3, backend="gudhi")
    finite = torch.isfinite(dg.death)
    (dg.birth.sum() + dg.death[finite].sum()).backward()
    expected = np.zeros(x.shape)
    d = dg.to_numpy()
    np.add.at(expected, (d.image, *d.birth_voxel.T), 1.0)
    keep = np.isfinite(d.death)
    np.add.at(expected, (d.image[keep], *d.death_voxel[keep].T), 1.0)
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    assert expected.sum() > 2


def test_torch_gradcheck_of_the_diagram_values():
    x = torch.tensor(volume((1, 3, 3, 4), seed=4), requires_grad=True)

    def values(v):
        dg = cubical_persistence(v, spatial_dims=3, backend="gudhi")
        return dg.birth, dg.death[torch.isfinite(dg.death)]

    assert torch.autograd.gradcheck(values, (x,), eps=1e-6, atol=1e-9)


@pytest.mark.parametrize("construction", ["T", "V"])
def test_superlevel_is_the_sublevel_of_the_negated_volume(construction):
    volumes = np.random.default_rng(5).integers(0, 4, (2, 4, 5, 3)).astype(np.float64)
    up = cubical_persistence(volumes, spatial_dims=3, superlevel=True, construction=construction,
                             backend="gudhi")
    down = cubical_persistence(-volumes, spatial_dims=3, construction=construction,
                               backend="gudhi")
    assert up.superlevel and not down.superlevel
    assert canonical(up) == sorted((i, d, -b, -e, bp, dp)
                                   for i, d, b, e, bp, dp in canonical(down))
    assert (up.death[up.death_index < 0] == -np.inf).all()
    assert (up.birth > up.death).all()
    np.testing.assert_array_equal(up.last_voxel, down.last_voxel)


# ----------------------------------------------------------------------------- container


def test_container_of_volumes():
    volumes = volume((3, 4, 5, 6), seed=6)
    dg = cubical_persistence(volumes, spatial_dims=3, backend="gudhi")
    assert dg.birth_voxel is dg.birth_pixel and dg.death_voxel is dg.death_pixel
    assert dg.last_voxel is dg.last_pixel
    flat = np.ravel_multi_index(tuple(dg.birth_voxel.T), (4, 5, 6))
    np.testing.assert_array_equal(dg.birth_index, flat)
    essential = dg.death_voxel[:, 0] < 0
    np.testing.assert_array_equal(dg.death_index[essential], -1)
    np.testing.assert_array_equal(dg.death_index[~essential],
                                  np.ravel_multi_index(tuple(dg.death_voxel[~essential].T),
                                                       (4, 5, 6)))
    counts = dg.counts()
    assert counts.shape == (3, 3) and counts.sum() == len(dg)
    for i in range(3):
        for d in range(3):
            part = dg.for_image(i, dim=d)
            assert len(part) == counts[i, d] == ((dg.image == i) & (dg.dim == d)).sum()
            assert part.image_shape == (4, 5, 6) and part.batch_size == 3
    assert counts[:, 2].sum() > 0
    assert len(dg.select(dg.dim == 2)) == counts[:, 2].sum()
    with pytest.raises(ValueError, match=r"`dim` must be one of \(0, 1, 2\)"):
        dg.for_image(0, dim=3)
    h = ", ".join(f"H{d}: {counts[:, d].sum()}" for d in range(3))
    assert repr(dg) == (f"PersistenceDiagrams(batch_size=3, image_shape=(4, 5, 6), "
                        f"pairs={len(dg)} ({h}), sublevel, library=numpy, dtype=float64)")


def test_container_of_torch_volumes_to_numpy():
    x = torch.tensor(volume((2, 3, 4, 5), seed=7), requires_grad=True)
    dg = cubical_persistence(x, spatial_dims=3, backend="gudhi")
    host = dg.to_numpy()
    assert host.library == "numpy" and host.last_voxel.shape == (2, 3)
    assert canonical(host) == canonical(dg)
    np.testing.assert_array_equal(dg.birth_index.numpy(), host.birth_index)
    np.testing.assert_array_equal(dg.death_index.numpy(), host.death_index)
    assert "H2:" in repr(dg) and "library=torch" in repr(dg)
