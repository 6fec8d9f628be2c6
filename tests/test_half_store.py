"""The float16 store of the kernels rounds exactly like NumPy's cast, only faster."""

import numpy as np
import pytest

from softxent._kernels import load, store


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_store_rounds_like_the_cast_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    magnitudes = np.exp(rng.uniform(np.log(1e-12), np.log(7e4), size=(64, 257)))
    values = (magnitudes * rng.choice([-1.0, 1.0], size=magnitudes.shape)).astype(np.float32)
    # Exact ties between float16 subnormals (k + 1/2) * 2**-24, both parities of k.
    k = rng.integers(0, 1024, size=257)
    values[0] = ((k + 0.5) * 2.0**-24).astype(np.float32)
    values[1] = -values[0]
    values[2, :6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 65520.0]
    out = np.empty(values.shape, np.float16)
    with np.errstate(over="ignore"):  # 65520 and up round to inf, as intended
        expected = values.astype(np.float16)
        store(out, values.copy(), np.empty_like(values))
    same = out.view(np.uint16) == expected.view(np.uint16)
    assert same.all(), (values[~same][:5], out[~same][:5], expected[~same][:5])


def test_load_converts_every_float16_exactly():
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    work = np.empty(every.shape, np.float32)
    np.testing.assert_array_equal(load(every, work), every.astype(np.float32))
