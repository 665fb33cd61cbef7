"""cubical_persistence: the CPU backend against gudhi (the oracle) and cripser, and the API."""
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from satloss_gpu import PersistenceDiagrams, cubical_persistence
from satloss_gpu.persistence.backends.gudhi_backend import strict_ranks


def canonical(dg: PersistenceDiagrams) -> list:
    """Sorted (image, dim, birth pixel, death pixel, birth, death) tuples of a result."""
    d = dg.to_numpy()
    rows = zip(
        d.image.tolist(), d.dim.tolist(), map(tuple, d.birth_pixel.tolist()),
        map(tuple, d.death_pixel.tolist()), d.birth.tolist(), d.death.tolist(),
    )
    return sorted(rows)


def make_image(kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.random(shape)
    if kind == "smooth":
        return gaussian_filter(rng.random(shape), 1.5)
    if kind == "quantised":
        return rng.integers(0, 4, shape).astype(np.float64)
    if kind == "binary":
        return (rng.random(shape) > 0.5).astype(np.float32)
    if kind == "constant":
        return np.full(shape, 0.25)
    raise ValueError(kind)


KINDS = ["random", "smooth", "quantised", "binary", "constant"]


@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("superlevel", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_cpu_equals_gudhi_on_random_shapes(construction, superlevel, kind):
    rng = np.random.default_rng(hash((construction, superlevel, kind)) % 2**32)
    shapes = [(1, 1), (1, 9), (9, 1), (2, 2), (3, 7), (17, 5), (32, 32), (64, 41)]
    shapes += [tuple(rng.integers(1, 40, size=2)) for _ in range(6)]
    for shape in shapes:
        image = make_image(kind, shape, rng)
        ours = cubical_persistence(image, construction=construction, superlevel=superlevel,
                                   backend="cpu")
        oracle = cubical_persistence(image, construction=construction, superlevel=superlevel,
                                     backend="gudhi")
        assert canonical(ours) == canonical(oracle), (shape, kind)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    levels=st.integers(1, 6),
    construction=st.sampled_from(["T", "V"]),
    superlevel=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_quantised_images_equal_gudhi(height, width, levels, construction, superlevel,
                                               seed):
    """Few distinct values: many ties, plateaus and zero-persistence pairs."""
    image = np.random.default_rng(seed).integers(0, levels, (height, width)).astype(np.float32)
    ours = cubical_persistence(image, construction=construction, superlevel=superlevel)
    oracle = cubical_persistence(image, construction=construction, superlevel=superlevel,
                                 backend="gudhi")
    assert canonical(ours) == canonical(oracle)


def test_gudhi_backend_is_gudhi_on_the_perturbed_image():
    """The oracle wrapper equals plain gudhi run on the index-perturbed image."""
    import gudhi

    rng = np.random.default_rng(3)
    image = rng.integers(0, 3, (13, 9)).astype(np.float64)
    perturbed = image + 1e-9 * np.arange(image.size).reshape(image.shape)
    cc = gudhi.CubicalComplex(top_dimensional_cells=perturbed)
    cc.compute_persistence()
    regular, essential = cc.cofaces_of_persistence_pairs()
    expected = []
    for d, pairs in enumerate(regular):
        for b, e in np.asarray(pairs).reshape(-1, 2):
            rb, cb = np.unravel_index(b, image.shape, order="F")
            rd, cd = np.unravel_index(e, image.shape, order="F")
            if image[rb, cb] != image[rd, cd]:
                expected.append((d, (rb, cb), (rd, cd)))
    for d, births in enumerate(essential):
        for b in np.asarray(births).ravel():
            expected.append((d, tuple(np.unravel_index(b, image.shape, order="F")), (-1, -1)))
    dg = cubical_persistence(image, backend="gudhi").to_numpy()
    ours = [(d, tuple(b), tuple(e)) for d, b, e in
            zip(dg.dim.tolist(), dg.birth_pixel.tolist(), dg.death_pixel.tolist())]
    as_int = lambda rows: sorted((int(d), tuple(map(int, b)), tuple(map(int, e))) for d, b, e in rows)
    assert as_int(ours) == as_int(expected)


def test_strict_ranks_break_ties_by_index():
    ranks = strict_ranks(np.array([[1.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_array_equal(ranks, [[2.0, 0.0], [3.0, 1.0]])


@pytest.mark.parametrize("construction", ["T", "V"])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_cpu_diagrams_equal_cripser_on_larger_images(construction, kind):
    cripser = pytest.importorskip("cripser")
    rng = np.random.default_rng(11)
    image = make_image(kind, (96, 130), rng)
    compute = cripser.computePH_T if construction == "T" else cripser.computePH
    rows = compute(image, maxdim=1)
    death_inf = rows[:, 2] > 1e300
    theirs = sorted(
        (int(d), float(b), np.inf if inf else float(e))
        for (d, b, e), inf in zip(rows[:, :3], death_inf) if b != e
    )
    dg = cubical_persistence(image, construction=construction).to_numpy()
    ours = sorted(zip(dg.dim.tolist(), dg.birth.tolist(), dg.death.tolist()))
    assert ours == theirs


def test_batch_equals_images_one_by_one():
    rng = np.random.default_rng(5)
    batch = np.stack([make_image(k, (21, 17), rng) for k in KINDS]).astype(np.float32)
    together = cubical_persistence(batch)
    for i in range(len(batch)):
        alone = canonical(cubical_persistence(batch[i]))
        part = [(0,) + row[1:] for row in canonical(together.for_image(i))]
        assert part == alone


def test_result_types_shapes_and_grouping():
    rng = np.random.default_rng(0)
    images = rng.random((3, 10, 12)).astype(np.float32)
    dg = cubical_persistence(images)
    k = len(dg)
    assert isinstance(dg, PersistenceDiagrams) and dg.batch_size == 3
    assert dg.image_shape == (10, 12)
    assert dg.image.dtype == np.int64 and dg.dim.dtype == np.int64
    assert dg.birth.dtype == np.float32 and dg.death.dtype == np.float32
    assert dg.birth_pixel.shape == (k, 2) and dg.death_pixel.dtype == np.int64
    order = np.lexsort((dg.dim, dg.image))
    np.testing.assert_array_equal(order, np.arange(k))
    essential = np.isinf(dg.death)
    assert essential.sum() == 3 and np.all(dg.dim[essential] == 0)
    assert np.all(dg.death_pixel[essential] == -1)
    assert np.all(dg.birth[~essential] < dg.death[~essential])
    np.testing.assert_array_equal(dg.birth, images[dg.image, dg.birth_pixel[:, 0],
                                                   dg.birth_pixel[:, 1]])
    finite = ~essential
    np.testing.assert_array_equal(
        dg.death[finite],
        images[dg.image[finite], dg.death_pixel[finite, 0], dg.death_pixel[finite, 1]],
    )
    assert dg.counts().sum() == k
    assert "batch_size=3" in repr(dg) and "H1:" in repr(dg)


def test_essential_class_is_born_at_the_first_pixel_of_the_order():
    image = np.array([[0.5, 0.0, 0.0], [0.0, 0.7, 0.2]])
    dg = cubical_persistence(image, dims=(0,))
    essential = dg.select(np.isinf(dg.death))
    assert essential.birth_pixel.tolist() == [[0, 1]]


def test_superlevel_values_stay_in_input_terms():
    image = np.random.default_rng(2).random((15, 15))
    sup = cubical_persistence(image, superlevel=True)
    sub = cubical_persistence(-image)
    assert np.all(sup.birth >= sup.death)
    assert np.isneginf(sup.death).sum() == 1
    np.testing.assert_array_equal(sup.birth, -sub.birth)
    np.testing.assert_array_equal(sup.birth_pixel, sub.birth_pixel)


def test_dims_selects_dimensions():
    image = np.random.default_rng(4).random((20, 20))
    both = cubical_persistence(image)
    only_h1 = cubical_persistence(image, dims=[1])
    assert set(only_h1.dim.tolist()) == {1}
    assert canonical(only_h1) == canonical(both.select(both.dim == 1))


def test_torch_input_gives_torch_output_with_gradients():
    images = torch.rand(2, 9, 11, dtype=torch.float64, requires_grad=True)
    dg = cubical_persistence(images)
    assert isinstance(dg.birth, torch.Tensor) and dg.birth.dtype == torch.float64
    assert dg.image.dtype == torch.int64 and dg.birth_pixel.shape[1] == 2
    finite = torch.isfinite(dg.death)
    (dg.birth.sum() + dg.death[finite].sum()).backward()
    expected = np.zeros(images.shape)
    d = dg.to_numpy()
    np.add.at(expected, (d.image, d.birth_pixel[:, 0], d.birth_pixel[:, 1]), 1.0)
    f = np.isfinite(d.death)
    np.add.at(expected, (d.image[f], d.death_pixel[f, 0], d.death_pixel[f, 1]), 1.0)
    np.testing.assert_array_equal(images.grad.numpy(), expected)
    same = cubical_persistence(images.detach().numpy())
    assert canonical(dg) == canonical(same)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, bool, np.float16])
def test_integer_bool_and_half_inputs_are_converted(dtype):
    image = (np.random.default_rng(1).random((8, 8)) * 3).astype(dtype)
    dg = cubical_persistence(image)
    assert dg.birth.dtype.kind == "f"
    assert canonical(dg) == canonical(cubical_persistence(image.astype(np.float64)))


def test_for_image_and_to_numpy():
    dg = cubical_persistence(np.random.default_rng(0).random((2, 8, 8)))
    first = dg.for_image(-1, dim=0)
    assert set(first.image.tolist()) == {1} and set(first.dim.tolist()) == {0}
    with pytest.raises(IndexError, match="`i` must be in"):
        dg.for_image(2)
    assert isinstance(dg.to_numpy().birth, np.ndarray)


def test_for_image_refuses_what_it_cannot_select():
    """dim=2 of a 2D result used to give an empty diagram; floats were truncated."""
    dg = cubical_persistence(np.random.default_rng(0).random((2, 8, 8)))
    with pytest.raises(ValueError, match=r"`dim` must be one of \(0, 1\) \(or None\) for 2D "
                                         "images; got 2"):
        dg.for_image(0, dim=2)
    with pytest.raises(TypeError, match="`dim` must be an int; got float 0.5"):
        dg.for_image(0, dim=0.5)
    with pytest.raises(TypeError, match="`i` must be an int; got bool True"):
        dg.for_image(True)
    with pytest.raises(TypeError, match="`i` must be an int; got float 1.0"):
        dg.for_image(1.0)
    same = dg.for_image(np.int64(1), dim=np.int32(1))
    assert set(same.image.tolist()) == {1} and set(same.dim.tolist()) == {1}


def test_a_meta_tensor_is_refused_by_name():
    with pytest.raises(ValueError, match="`images` must be on the CPU or a CUDA device; got a "
                                         "tensor on device 'meta'"):
        cubical_persistence(torch.zeros(4, 4, device="meta"))


def test_docstring_example():
    image = np.array([[0.0, 1.0, 0.0]])
    dg = cubical_persistence(image)
    assert len(dg) == 2
    assert dg.birth.tolist() == [0.0, 0.0] and dg.death.tolist() == [np.inf, 1.0]


@pytest.mark.parametrize(
    "images, kwargs, error, match",
    [
        (np.array([[0.0, np.nan]]), {}, ValueError, "`images` must be finite; found 1 NaN"),
        (np.array([[0.0, np.inf]]), {}, ValueError, "found 0 NaN and 1 inf"),
        (np.zeros(5), {}, ValueError, r"shape \(H, W\) or \(B, H, W\); got shape \(5,\)"),
        (np.zeros((1, 2, 3, 4)), {}, ValueError, "got shape"),
        (np.zeros((0, 4)), {}, ValueError, "must not be empty"),
        (np.zeros((2, 3, 0)), {}, ValueError, "must not be empty"),
        (np.zeros((3, 3), dtype=complex), {}, TypeError, "real numbers"),
        (np.array([["a"]]), {}, TypeError, "real numbers"),
        (np.zeros((3, 3)), {"construction": "X"}, ValueError, "`construction` must be one of"),
        (np.zeros((3, 3)), {"backend": "tpu"}, ValueError, "`backend` must be one of"),
        (np.zeros((3, 3)), {"dims": (2,)}, ValueError, "`dims` must be a non-empty subset"),
        (np.zeros((3, 3)), {"dims": ()}, ValueError, "`dims` must be a non-empty subset"),
        (np.zeros((3, 3)), {"superlevel": "yes"}, TypeError, "`superlevel` must be a bool"),
    ],
)
def test_bad_input_raises_clear_errors(images, kwargs, error, match):
    with pytest.raises(error, match=match):
        cubical_persistence(images, **kwargs)


def test_torch_nan_is_rejected():
    with pytest.raises(ValueError, match="found 1 NaN"):
        cubical_persistence(torch.tensor([[0.0, float("nan")]]))


def test_threads_do_not_change_results():
    import numba

    images = np.random.default_rng(8).random((6, 30, 30)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = canonical(cubical_persistence(images))
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = canonical(cubical_persistence(images))
    finally:
        numba.set_num_threads(before)
    assert one == many


@pytest.mark.parametrize("to_library", [np.asarray, torch.as_tensor])
def test_flat_indices_of_critical_pixels(to_library):
    image = np.random.default_rng(6).random((7, 9))
    dg = cubical_persistence(to_library(image))
    d = dg.to_numpy()
    birth, death = np.asarray(dg.birth_index), np.asarray(dg.death_index)
    np.testing.assert_array_equal(birth, d.birth_pixel[:, 0] * 9 + d.birth_pixel[:, 1])
    essential = np.isinf(d.death)
    assert np.all(death[essential] == -1)
    np.testing.assert_array_equal(image.ravel()[death[~essential]], d.death[~essential])


@pytest.mark.parametrize("backend", ["cpu", "gudhi", "cuda"])
@pytest.mark.parametrize("superlevel", [False, True])
@pytest.mark.parametrize("construction", ["T", "V"])
def test_last_pixel_is_the_last_of_the_strict_order(backend, superlevel, construction):
    if backend == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        pytest.skip("NumPy input reaches the cuda backend only in the simulator")
    rng = np.random.default_rng(5)
    images = np.stack([rng.integers(0, 3, (9, 7)).astype(np.float32),   # ties
                       rng.random((9, 7)).astype(np.float32),
                       np.full((9, 7), 0.5, dtype=np.float32)])          # constant
    dg = cubical_persistence(images, construction=construction, superlevel=superlevel,
                             backend=backend).to_numpy()
    filtration = (-images if superlevel else images).reshape(3, -1)
    # largest value, ties to the largest flat index
    last = [max(range(filtration.shape[1]), key=lambda k: (row[k], k)) for row in filtration]
    expected = [[k // 7, k % 7] for k in last]
    assert dg.last_pixel.tolist() == expected
    assert dg.select(dg.dim == 1).last_pixel.tolist() == expected


def test_select_refuses_a_mask_that_is_not_one_bool_per_pair():
    """A mask of another length gave NumPy's IndexError; an index array was taken as one."""
    dg = cubical_persistence(np.random.default_rng(0).random((2, 5, 5)))
    with pytest.raises(ValueError, match=rf"`mask` must have shape \({len(dg)},\).*got \(3,\)"):
        dg.select(np.ones(3, bool))
    with pytest.raises(TypeError, match="`mask` must be an array of bools.*got int64"):
        dg.select(np.arange(2))
    with pytest.raises(TypeError, match="`mask` must be an array of bools.*got list"):
        dg.select([True] * len(dg))
    on_torch = cubical_persistence(torch.rand(2, 5, 5))
    assert len(on_torch.select(on_torch.dim == 0)) == int((on_torch.dim == 0).sum())
