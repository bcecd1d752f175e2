"""DDP training on CPU (gloo, 2 processes): ranks stay identical, ALRC moments included, and the
result equals one process stepping on the ranks' batches concatenated."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from em_accel.data import NoisyCropDataset, make_batch, synthetic_micrograph
from em_accel.train.alrc import DALRC
from em_accel.train.loop import Trainer, TrainConfig

STEPS, BATCH, WORLD = 6, 2, 2


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 1, 3, padding=1))


def _dataset() -> NoisyCropDataset:
    return NoisyCropDataset([synthetic_micrograph(48, 3)], 32, "low", seed=5)


def _config() -> TrainConfig:
    # moments start above the losses (the usual over-estimate), so the ranks' updates differ:
    # without synchronisation their moments would drift apart
    return TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-2, amp=False, log_every=1,
                       checkpoint_every=1000)


def _trainer() -> Trainer:
    tr = Trainer(_net(), _dataset(), _config(), None, device="cpu", progress=False)
    tr.dalrc = DALRC().train()
    return tr


def _worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        tr = _trainer()
        assert tr.world == WORLD and tr.rank == rank
        tr.fit()
        # DALRC's extra running mean is synchronised too
        tr.dalrc(torch.rand(3, generator=torch.Generator().manual_seed(rank)) + rank)
        torch.save({"model": tr.model.state_dict(), "alrc": tr.alrc.state_dict(),
                    "dalrc": tr.dalrc.state_dict()}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_and_equal_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    for part in ("model", "alrc", "dalrc"):
        for k in r0[part]:
            torch.testing.assert_close(r0[part][k], r1[part][k], rtol=0, atol=0, msg=f"{part}.{k}")
    # one process, batches (2s, 2s+1) concatenated: same gradients (DDP averages the ranks'
    # means), same ALRC update (the average of the ranks' moment updates)
    single = _trainer()
    for s in range(STEPS):
        parts = [make_batch(single.dataset, WORLD * s + r, BATCH) for r in range(WORLD)]
        single.train_step(tuple(torch.cat(p) for p in zip(*parts)))
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    torch.testing.assert_close(r0["alrc"]["mu1"], single.alrc.mu1, rtol=1e-5, atol=0)
    torch.testing.assert_close(r0["alrc"]["mu2"], single.alrc.mu2, rtol=1e-5, atol=0)
    assert float(single.alrc.mu1) < 0.1  # the moments moved: the check above is not vacuous
