"""The simulator's glue refuses kernel views where a GPU library would (scans, sorts, flags)."""
import numpy as np
import pytest

from satloss_gpu.kernels.cuda._glue import Glue, KernelView


def test_library_steps_accept_buffers_and_refuse_their_kernel_views():
    glue = Glue()
    buffer = glue.full("u64", 5, -1)
    buffer[1] = 7
    view = glue.view(buffer, "u64")
    assert isinstance(view, KernelView) and not isinstance(buffer, KernelView)
    view[3] = 9  # the view writes through to the buffer, as a device view does
    np.testing.assert_array_equal(glue.merged_flags(buffer, 5), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(glue.cumsum(glue.merged_flags(buffer, 5)), [0, 1, 1, 2, 2])
    for step in (lambda: glue.merged_flags(view, 5), lambda: glue.cumsum(view),
                 lambda: glue.to_host(view), lambda: glue.sort_u64(view, 0, 5),
                 lambda: glue.stack_i64(buffer, view), lambda: glue.max_item(view)):
        with pytest.raises(TypeError, match="kernel view"):
            step()
