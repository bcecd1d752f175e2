"""Training of scan policies and their completion generator (thesis ch. 5, and beyond it).

One :class:`ScanTrainer` owns the generator, its optimiser and the loss normaliser, the crop
set, and one learner, chosen by ``mode``:

* ``"generator"`` - the generator alone on a mixture of path families (random straight-segment
  walks, spirals, sub-grids, random points): the shared starting point of the other modes, and
  the final generator every method is evaluated with (fine-tuned on the evaluated paths).
* ``"fixed"`` - one contiguous path (T-1 free angles) optimised by gradient descent on the
  training set: the completion loss is backpropagated through the bilinear sampler and the
  splatting rasteriser into the angles; the generator trains jointly.
* ``"actor"`` - a recurrent actor trained the same way, end to end, without a critic: every
  observation is a differentiable function of the earlier angles.
* ``"rdpg"`` - the thesis's recurrent deterministic policy gradients (see :mod:`.rdpg`).

Losses: 10 * MSE per example against the blurred crop, through ALRC (mu1 1, mu2 4 at start),
divided by the running mean of the clipped loss (decay 0.997), as the thesis's RL generator.
Everything (weights, optimisers, ALRC moments, running mean, replay buffer, step, RNG states) is
checkpointed; ``train(steps)`` continues from the last checkpoint in ``out_dir``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..models.adaptive import ScanActor, ScanCritic, ScanGenerator
from ..train.alrc import ALRC
from ..train.checkpoint import load_checkpoint, save_checkpoint
from .policy_data import dihedral_batch
from .rollout import ScanBudget, actor_rollout, angle_path, outside_distance, partial_input
from .static_paths import mixed_positions

MODES = ("generator", "fixed", "actor", "rdpg")


@dataclass
class PolicyConfig:
    """Hyper-parameters (thesis values where the thesis has one; CPU-sized networks)."""

    mode: str = "generator"
    core: str = "lstm"           # actor/critic core: "lstm" or "gru"
    hidden: int = 256            # units per recurrent layer (thesis 256)
    gen_width: int = 8           # generator first-layer channels (thesis 32)
    gen_blocks: int = 2          # generator residual blocks (thesis 5)
    bn_momentum: float = 0.01    # thesis 0.001; short runs need faster statistics
    batch: int = 16              # thesis 32
    gen_lr: float = 6e-4         # the thesis's effective generator rate (Adam)
    actor_lr: float = 5e-4       # RMSProp in RDPG; Adam for the gradient-trained learners
    critic_lr: float = 1e-3      # RMSProp
    path_lr: float = 0.02        # Adam on the angles of a fixed path [rad]
    gamma: float = 0.97
    edge_penalty: float = 0.05   # per step leaving the image (RDPG); per px outside (gradient)
    buffer: int = 100_000        # replay capacity [episodes]
    ou_theta: float = 0.1
    ou_sigma: float = 0.2
    weight_shrink: float = 1e-5  # v <- (1 - shrink) v per step on all networks
    seed: int = 0
    budget: dict = field(default_factory=lambda: asdict(ScanBudget()))

    def scan_budget(self) -> ScanBudget:
        return ScanBudget(**self.budget)


class LossNormaliser(nn.Module):
    """ALRC then division by the running mean of the clipped loss (stop-gradient)."""

    def __init__(self, decay: float = 0.997) -> None:
        super().__init__()
        self.alrc = ALRC(mu1_start=1.0, mu2_start=4.0)
        self.decay = decay
        self.register_buffer("mean", torch.ones(()))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        clipped = self.alrc(losses)
        if self.training:
            with torch.no_grad():
                m = clipped.mean()
                self.mean.copy_(torch.where(self.started, self.decay * self.mean
                                            + (1 - self.decay) * m, m))
                self.started.fill_(True)
        return clipped / self.mean


class RNGState:
    """A torch.Generator as a checkpointable object."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def completion_losses(generator: nn.Module, images: torch.Tensor, positions: torch.Tensor
                      ) -> torch.Tensor:
    """[B] 10 * MSE of the generator's completion of images [B, H, W] scanned at positions."""
    pred = generator(partial_input(images, positions))[:, 0]
    return 10.0 * ((pred - images) ** 2).mean(dim=(1, 2))


def shrink_(*modules: nn.Module, factor: float) -> None:
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                if p.requires_grad:
                    p.mul_(1.0 - factor)


class ScanTrainer:
    """See the module docstring. ``images``: prepared training crops [N, side, side]."""

    def __init__(self, config: PolicyConfig, images: torch.Tensor, out_dir: str | Path, *,
                 device: str | torch.device | None = None,
                 init_generator: str | Path | None = None,
                 positions_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
        self.config, self.budget = config, config.scan_budget()
        if images.dim() != 3 or tuple(images.shape[1:]) != (self.budget.side,) * 2:
            raise ValueError(f"images must have shape [N, {self.budget.side}, {self.budget.side}], "
                             f"got {list(images.shape)}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)
        self.out_dir = Path(out_dir)
        self.positions_fn = positions_fn  # mode "generator": the paths to train on (default mixed)
        torch.manual_seed(config.seed)
        self.rng = RNGState(config.seed)
        self.generator = ScanGenerator(config.gen_width, config.gen_blocks,
                                       config.bn_momentum).to(self.device)
        if init_generator is not None:
            from .policy_io import load_state

            self.generator.load_state_dict(load_state(init_generator, "generator"))
        self.gen_opt = torch.optim.Adam(self.generator.parameters(), lr=config.gen_lr)
        self.norm = LossNormaliser().to(self.device)
        self.objects: dict = {"generator": self.generator, "gen_opt": self.gen_opt,
                              "norm": self.norm, "rng": self.rng}
        self.actor = self.angles = self.rdpg = None
        b = self.budget
        if config.mode == "fixed":
            self.angles = nn.Parameter(torch.full((b.segments - 1,), b.first_angle,
                                                  device=self.device))
            self.path_opt = torch.optim.Adam([self.angles], lr=config.path_lr)
            self.objects.update(path=_ParamHolder(self.angles), path_opt=self.path_opt)
        elif config.mode in ("actor", "rdpg"):
            self.actor = ScanActor(config.core, config.hidden, b.probes, b.side).to(self.device)
            self.objects["actor"] = self.actor
            if config.mode == "actor":
                self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
                self.objects["actor_opt"] = self.actor_opt
            else:
                from .rdpg import RDPG

                critic = ScanCritic(config.core, config.hidden, b.probes, b.side).to(self.device)
                self.rdpg = RDPG(self, critic)
                self.objects.update(self.rdpg.objects())
        self.step = 0
        self.log_path = self.out_dir / "log.jsonl"
        self.ckpt_path = self.out_dir / "checkpoint.safetensors"
        if self.ckpt_path.exists():
            self.step, _ = load_checkpoint(self.ckpt_path, self.objects, map_location=self.device)

    # -- data ----------------------------------------------------------------------------------
    def sample_images(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images [n, side, side] with random dihedral transforms, indices, transforms)."""
        n = n or self.config.batch
        g = self.rng.generator
        idx = torch.randint(self.images.shape[0], (n,), generator=g)
        k = torch.randint(8, (n,), generator=g)
        return dihedral_batch(self.images[idx.to(self.device)], k), idx, k

    def fixed_angles(self) -> torch.Tensor:
        """[T] the fixed path's angles (mode "fixed"), the fixed first one included."""
        first = torch.full((1,), self.budget.first_angle, device=self.device)
        return torch.cat([first, self.angles])

    # -- one step per mode ---------------------------------------------------------------------
    def _train_generator(self, images: torch.Tensor, positions: torch.Tensor,
                         extra: torch.Tensor | None = None,
                         other: tuple[torch.optim.Optimizer, ...] = ()) -> dict:
        losses = completion_losses(self.generator, images, positions)
        cost = self.norm(losses)
        self.last_cost = cost.detach()  # the terminal cost of RDPG
        loss = cost.mean() + (extra if extra is not None else 0.0)
        self.gen_opt.zero_grad(set_to_none=True)
        for opt in other:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        self.gen_opt.step()
        for opt in other:
            opt.step()
        shrink_(self.generator, factor=self.config.weight_shrink)
        return {"loss": losses.mean().item()}

    def train_step(self) -> dict:
        cfg, b = self.config, self.budget
        self.generator.train()
        if cfg.mode == "rdpg":
            return self.rdpg.step()
        images, _, _ = self.sample_images()
        if cfg.mode == "generator":
            if self.positions_fn is not None:
                pos = self.positions_fn(images)
            else:
                pos = mixed_positions(images.shape[0], b, generator=self.rng.generator)
            pos = pos.to(self.device)
            return self._train_generator(images, pos)
        if cfg.mode == "fixed":
            pos = angle_path(self.fixed_angles()[None], b).expand(images.shape[0], -1, -1)
            soft = cfg.edge_penalty * outside_distance(pos[:1], b.side).mean()
            return self._train_generator(images, pos, soft, (self.path_opt,))
        roll = actor_rollout(self.actor, images, b)
        soft = cfg.edge_penalty * outside_distance(roll.positions, b.side).mean()
        out = self._train_generator(images, roll.positions, soft, (self.actor_opt,))
        shrink_(self.actor, factor=cfg.weight_shrink)
        return out

    # -- the loop ------------------------------------------------------------------------------
    def save(self) -> None:
        save_checkpoint(self.ckpt_path, self.objects, self.step, {"config": asdict(self.config)})

    def train(self, steps: int, *, checkpoint_every: int = 200, max_seconds: float | None = None,
              progress: bool = True) -> int:
        """Train up to ``steps`` total steps (continuing a checkpoint), or until max_seconds;
        returns the step reached. Writes log.jsonl and checkpoint.safetensors in out_dir."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        t0 = time.time()
        acc: dict[str, float] = {}
        n = 0
        with open(self.log_path, "a") as log:
            while self.step < steps:
                stats = self.train_step()
                self.step += 1
                n += 1
                for key, v in stats.items():
                    acc[key] = acc.get(key, 0.0) + v
                if self.step % 50 == 0 or self.step == steps:
                    row = {"step": self.step, "time": round(time.time() - t0, 2),
                           **{k: v / n for k, v in acc.items()}}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    if progress and os.isatty(2):
                        print(row, flush=True)
                    acc, n = {}, 0
                if self.step % checkpoint_every == 0:
                    self.save()
                if max_seconds is not None and time.time() - t0 > max_seconds:
                    break
        self.save()
        return self.step


class _ParamHolder:
    """A bare parameter as a checkpointable object."""

    def __init__(self, p: nn.Parameter) -> None:
        self.p = p

    def state_dict(self) -> dict:
        return {"value": self.p.detach()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.p.copy_(state["value"])

