"""A training loop for image-to-image networks with ALRC on the hot path.

Pieces: Adam (β1 = 0.5 as the thesis), a learning-rate schedule, the thesis's Huberised MSE
clipped by :class:`em_accel.train.ALRC` (the fused native op, or per-example losses through
the module), mixed precision (bfloat16 autocast) on CUDA, safetensors checkpoints every
``checkpoint_every`` steps with exact resume, a progress bar, a JSON-lines curve log, and DDP
when ``torch.distributed`` is initialised (start with ``torchrun``).

Batches come from a deterministic dataset (:func:`em_accel.data.make_batch`): batch ``s`` is
a pure function of ``s``, so a run killed after checkpoint ``k`` and resumed repeats exactly
the steps after ``k`` and ends in the same state as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from .._api import resolve_device
from .._atomic import write_text_atomic
from ..data.datasets import make_batch
from .alrc import ALRC
from .checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters. Defaults follow the thesis's denoiser where it states them."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    schedule: str = "cosine"          # "constant", "cosine", or "step" (×0.1 at 50%, 75%)
    warmup_steps: int = 0
    final_lr_fraction: float = 0.01   # cosine floor, as a fraction of lr
    l2: float = 5e-5                  # weight of Σ ||w||²/2 over conv weights (thesis 5e-5)
    huber: bool = True                # thesis: 1000·m if m < 1e-3 else sqrt(1000·m)
    alrc: str = "fused"               # "fused", "module" (unfused) or "off"
    alrc_n_up: float = 3.0
    alrc_mu1_start: float = 0.1       # over-estimates of the per-example MSE moments
    alrc_mu2_start: float = 0.03
    checkpoint_every: int = 100
    log_every: int = 10
    amp: bool = True                  # bfloat16 autocast, CUDA only
    grad_clip: float | None = None
    workers: int = 0                  # DataLoader processes building batches ahead

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def huberised(mse: torch.Tensor) -> torch.Tensor:
    """The thesis's loss of a per-example MSE: ``1000 m`` below 1e-3, else ``sqrt(1000 m)``
    (continuous at m = 1e-3, where both are 1)."""
    scaled = 1000.0 * mse
    return torch.where(mse < 1e-3, scaled, torch.sqrt(scaled.clamp_min(1.0)))


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at ``step`` (linear warm-up, then the schedule)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "cosine":
        f = config.final_lr_fraction
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if config.schedule == "step":
        return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01
    raise ValueError(f"schedule must be 'constant', 'cosine' or 'step', got {config.schedule!r}")


def _l2(model: nn.Module) -> torch.Tensor:
    terms = [0.5 * (m.weight ** 2).sum() for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class Trainer:
    """Train ``model`` on ``(input, target)`` batches of ``dataset``.

    Args:
        model: maps [B, C, H, W] inputs to outputs shaped like the targets.
        dataset: deterministic dataset of ``(input, target)`` tensors (item i fixed by i).
        config: hyper-parameters.
        out_dir: where ``checkpoint.safetensors`` and ``log.jsonl`` go (None: no files).
        device: training device (keyword-only); None: the model's device.
        progress: show a tqdm progress bar (on a terminal).
    """

    def __init__(self, model: nn.Module, dataset: Dataset, config: TrainConfig,
                 out_dir: str | Path | None = None, *,
                 device: str | torch.device | None = None, progress: bool = True) -> None:
        if config.alrc not in ("fused", "module", "off"):
            raise ValueError(f"config.alrc must be 'fused', 'module' or 'off', got {config.alrc!r}")
        lr_factor(0, config)  # validates the schedule name
        self.config, self.dataset = config, dataset
        self.device = resolve_device(device, next(model.parameters(), None))
        self.model = model.to(self.device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.alrc = ALRC(n_up=config.alrc_n_up, mu1_start=config.alrc_mu1_start,
                         mu2_start=config.alrc_mu2_start).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=config.betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda s: lr_factor(s, config))
        self.step = 0
        dist = torch.distributed
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) \
            if dist.is_available() and dist.is_initialized() else (0, 1)
        self.net: nn.Module = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # -- state ---------------------------------------------------------------------------
    def _objects(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "alrc": self.alrc}

    def save(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint (default ``out_dir/checkpoint.safetensors``)."""
        if path is None:
            if self.out_dir is None:
                raise ValueError("no path given and the trainer has no out_dir")
            path = self.out_dir / CHECKPOINT
        return save_checkpoint(path, self._objects(), self.step,
                               {"config": self.config.to_json()})

    def load(self, path: str | Path) -> int:
        """Restore from a checkpoint; returns the step it was taken at."""
        self.step, _ = load_checkpoint(path, self._objects(), map_location=self.device)
        return self.step

    # -- one step ------------------------------------------------------------------------
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, per-example unclipped MSE) of a batch."""
        pred, target = pred.float(), target.float()
        raw = ((pred - target) ** 2).flatten(1).mean(1)
        if self.config.alrc == "fused":
            per = self.alrc.fused(pred, target, "squared")
        elif self.config.alrc == "module":
            per = self.alrc(raw)
        else:
            per = raw
        per = huberised(per) if self.config.huber else per
        loss = per.mean()
        if self.config.l2:
            loss = loss + self.config.l2 * _l2(self.model)
        return loss, raw.detach()

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        """One optimiser step on ``(inputs, targets)``; returns logged scalars."""
        self.net.train()
        self.alrc.train()
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        amp = self.config.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            pred = self.net(x)
        loss, raw = self.loss(pred, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"step": self.step, "loss": float(loss.detach()), "mse": float(raw.mean()),
                "lr": self.optimizer.param_groups[0]["lr"]}

    # -- the loop ------------------------------------------------------------------------
    def fit(self, resume: bool = True,
            callback: Callable[["Trainer", dict[str, float]], None] | None = None
            ) -> list[dict[str, float]]:
        """Train to ``config.steps``, resuming from ``out_dir``'s checkpoint if there is one.

        ``callback(trainer, record)`` runs after every step. Returns the records logged in
        this call.
        """
        ckpt = self.out_dir / CHECKPOINT if self.out_dir is not None else None
        if resume and ckpt is not None and ckpt.is_file():
            self.load(ckpt)
            self._truncate_log()
        records: list[dict[str, float]] = []
        bar = None
        if self.progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.config.steps, initial=self.step, desc="train", unit="step")
        t0 = time.perf_counter()
        c = self.config
        batches = iter(self._batches(self.step))
        while self.step < c.steps:
            rec = self.train_step(next(batches))
            rec["time_s"] = time.perf_counter() - t0
            if self.rank == 0 and (self.step % c.log_every == 0 or self.step == c.steps):
                records.append(rec)
                self._log(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", mse=f"{rec['mse']:.3g}")
            if self.rank == 0 and self.out_dir is not None and (
                    self.step % c.checkpoint_every == 0 or self.step == c.steps):
                self.save()
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(self, rec)
        if bar is not None:
            bar.close()
        return records

    def _batches(self, start: int):
        """Batches ``start, start+1, ...`` (each a pure function of its index), built by
        ``config.workers`` processes when > 0."""
        c = self.config
        ids = range(start * self.world + self.rank, c.steps * self.world, self.world)
        if c.workers <= 0:
            return (make_batch(self.dataset, i, c.batch_size) for i in ids)
        from torch.utils.data import DataLoader

        return DataLoader(_BatchView(self.dataset, c.batch_size), batch_size=None,
                          sampler=list(ids), num_workers=c.workers,
                          pin_memory=self.device.type == "cuda", prefetch_factor=4,
                          persistent_workers=False)

    def _log(self, rec: dict[str, float]) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _truncate_log(self) -> None:
        """Drop log lines after the restored step (they belong to the lost interval) and a line
        torn by a kill mid-write; the rewrite is atomic."""
        path = self.out_dir / LOG if self.out_dir is not None else None
        if path is None or not path.is_file():
            return
        keep = [json.dumps(r) for r in _log_records(path) if r["step"] <= self.step]
        write_text_atomic(path, "".join(ln + "\n" for ln in keep))


class _BatchView(Dataset):
    """Item ``i`` = batch ``i`` of a deterministic dataset (for DataLoader workers)."""

    def __init__(self, dataset: Dataset, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int):
        return make_batch(self.dataset, i, self.batch_size)


def _log_records(path: Path) -> list[dict[str, float]]:
    """Records of a JSON-lines log; a last line torn by a kill mid-write is skipped."""
    lines = path.read_text().splitlines()
    out = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON (a corrupt log)") from None
    return out


def read_log(out_dir: str | Path) -> list[dict[str, float]]:
    """The logged curve of a run directory."""
    return _log_records(Path(out_dir) / LOG)
