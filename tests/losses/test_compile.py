"""A ``torch.compile``d training step that contains the loss.

The loss runs outside the compiled graph (``torch.compiler.disable``, applied at its first
call: one graph break); the model around it is compiled. Values and gradients equal the eager
step's, also when the loss is first called while Dynamo traces.
"""
import shutil
import subprocess
import sys

import pytest
import torch

from satloss_gpu import SATLoss
from satloss_gpu.losses.functional import loss_with_options, sat_loss

BACKENDS = ["aot_eager"] + (["inductor"] if shutil.which("gcc") or shutil.which("cc") else [])


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 1, 1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_step_with_the_loss_matches_eager(backend):
    torch._dynamo.reset()
    for func in (sat_loss, loss_with_options):   # the loss's first call happens while Dynamo traces
        func._outside_graph_cache.clear()
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(2, 1, 16, 16, generator=generator)
    target = (torch.rand(2, 1, 16, 16, generator=generator) > 0.7).float()
    crit = SATLoss(sigmoid=True)

    def step(net, x, y):
        logits = net(x)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + 0.1 * crit(logits, y)

    eager_net, compiled_net = _net(), _net()
    compiled = torch.compile(step, backend=backend)(compiled_net, image, target)
    compiled.backward()
    eager = step(eager_net, image, target)
    eager.backward()
    assert float(eager.detach()) > 0
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(compiled_net.parameters(), eager_net.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    explanation = torch._dynamo.explain(step)(compiled_net, image, target)
    assert explanation.graph_break_count >= 1 and explanation.graph_count >= 1


def test_importing_the_losses_does_not_load_dynamo():
    code = "import sys; from satloss_gpu import SATLoss; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
