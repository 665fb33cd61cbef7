"""A DistributedDataParallel step with the loss: 2 CPU processes, gloo.

Each rank computes BCE + SATLoss on its own batch; DDP averages the gradients. They must equal
the mean of the gradients that one process computes for the two batches separately.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from satloss_gpu import SATLoss


    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(),
                                   torch.nn.Conv2d(4, 1, 3, padding=1))


    def batch(rank):
        generator = torch.Generator().manual_seed(100 + rank)
        image = torch.rand(2, 1, 12, 12, generator=generator)
        target = (image > 0.6).float()
        return image, target


    def loss_of(net, rank):
        image, target = batch(rank)
        logits = net(image)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        return bce + 0.5 * SATLoss(sigmoid=True)(logits, target)


    def worker(rank, folder):
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                                world_size=2)
        net = torch.nn.parallel.DistributedDataParallel(model())
        loss = loss_of(net, rank)
        loss.backward()
        grads = [p.grad.detach().clone() for p in net.parameters()]
        torch.save({"loss": loss.detach(), "grads": grads}, f"{folder}/rank{rank}.pt")
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(worker, args=(sys.argv[1],), nprocs=2, join=True)
''')


def test_ddp_step_with_the_loss_averages_the_per_rank_gradients(tmp_path):
    script = tmp_path / "ddp_step.py"
    script.write_text(SCRIPT)
    path = [p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sys.path.insert(0, str(tmp_path))
    try:
        import ddp_step
    finally:
        sys.path.remove(str(tmp_path))
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = []
    for rank in range(2):
        net = ddp_step.model()
        loss = ddp_step.loss_of(net, rank)
        loss.backward()
        torch.testing.assert_close(results[rank]["loss"], loss.detach())
        single.append([p.grad for p in net.parameters()])
    assert float(results[0]["loss"]) != float(results[1]["loss"])   # each rank its own batch
    for ours_0, ours_1, g0, g1 in zip(results[0]["grads"], results[1]["grads"], *single):
        torch.testing.assert_close(ours_0, ours_1)
        torch.testing.assert_close(ours_0, (g0 + g1) / 2, rtol=1e-5, atol=1e-7)
