"""Recurrent deterministic policy gradients for adaptive scans (thesis ch. 5), and its replay.

Each step: the actor (with Ornstein-Uhlenbeck noise) scans a fresh batch in the native
environment and the episodes go to the replay buffer; a replayed batch trains the generator on
its partial scans, and its normalised loss C is the terminal cost. The critic Q(h_t, a_t) >= 0
learns y_t = penalty_t + gamma * Q_target(h_{t+1}, mu(h_{t+1})) (y = penalty + C at the last
action); the actor minimises Q(h_t, mu(h_t)) through the critic. The target critic is a soft
copy with decay 0.997^(1 + max(100000 - step, 0) / 10000), as the thesis's final code (which
has no target actor).
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch

from .policy_data import dihedral_batch
from .policy_train import shrink_
from .rollout import angle_path, edge_penalties, env_rollout, segment_starts


class Replay(NamedTuple):
    angles: torch.Tensor  # [B, T] [rad]
    values: torch.Tensor  # [B, T, S]
    index: torch.Tensor   # [B] training-crop index
    k: torch.Tensor       # [B] dihedral transform


class ReplayBuffer:
    """Episodes (angles, observations, crop index and dihedral transform; positions follow from
    the angles). Grows to ``capacity``, then new episodes overwrite random slots."""

    def __init__(self, capacity: int, segments: int, probes: int, generator: torch.Generator
                 ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.segments, self.probes = int(capacity), segments, probes
        self.generator = generator
        self.size = 0
        self._alloc(min(self.capacity, 1024))

    def _alloc(self, n: int) -> None:
        old = getattr(self, "angles", None)
        new = (torch.zeros(n, self.segments), torch.zeros(n, self.segments, self.probes),
               torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))
        if old is not None:
            for t, o in zip(new, (self.angles, self.values, self.index, self.k)):
                t[:self.size] = o[:self.size]
        self.angles, self.values, self.index, self.k = new

    def __len__(self) -> int:
        return self.size

    def add(self, angles: torch.Tensor, values: torch.Tensor, index: torch.Tensor,
            k: torch.Tensor) -> None:
        n = angles.shape[0]
        fresh = min(n, self.capacity - self.size)
        if self.size + fresh > self.angles.shape[0]:
            self._alloc(min(self.capacity, max(2 * self.angles.shape[0], self.size + fresh)))
        slots = torch.cat([torch.arange(self.size, self.size + fresh),
                           torch.randint(self.capacity, (n - fresh,), generator=self.generator)])
        self.size += fresh
        self.angles[slots] = angles.detach().cpu().float()
        self.values[slots] = values.detach().cpu().float().reshape(n, self.segments, self.probes)
        self.index[slots], self.k[slots] = index.cpu(), k.cpu()

    def sample(self, n: int) -> Replay:
        if self.size == 0:
            raise RuntimeError("the replay buffer is empty")
        i = torch.randint(self.size, (n,), generator=self.generator)
        return Replay(self.angles[i], self.values[i], self.index[i], self.k[i])

    def state_dict(self) -> dict:
        s = self.size
        return {"size": s, "capacity": self.capacity, "angles": self.angles[:s],
                "values": self.values[:s], "index": self.index[:s], "k": self.k[:s]}

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.size = int(state["capacity"]), 0
        self.angles = None
        self._alloc(max(1, min(self.capacity, max(1024, int(state["size"])))))
        s = self.size = int(state["size"])
        self.angles[:s], self.values[:s] = state["angles"], state["values"]
        self.index[:s], self.k[:s] = state["index"], state["k"]


class RDPG:
    """The RDPG learner of a :class:`~em_accel.scan.policy_train.ScanTrainer` (mode "rdpg")."""

    def __init__(self, trainer, critic) -> None:
        cfg, b = trainer.config, trainer.budget
        self.trainer, self.critic = trainer, critic
        self.target = copy.deepcopy(critic).requires_grad_(False)
        self.actor_opt = torch.optim.RMSprop(trainer.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.RMSprop(critic.parameters(), lr=cfg.critic_lr)
        self.buffer = ReplayBuffer(cfg.buffer, b.segments, b.probes, trainer.rng.generator)

    def objects(self) -> dict:
        return {"critic": self.critic, "target_critic": self.target, "actor_opt": self.actor_opt,
                "critic_opt": self.critic_opt, "buffer": self.buffer}

    def collect(self) -> None:
        tr, cfg = self.trainer, self.trainer.config
        images, idx, k = tr.sample_images()
        roll, _ = env_rollout(tr.actor, images, tr.budget, edge_penalty=cfg.edge_penalty,
                              noise_sigma=cfg.ou_sigma, noise_theta=cfg.ou_theta,
                              generator=tr.rng.generator)
        it = tr.step + 1
        if it <= 100_000 or torch.rand((), generator=tr.rng.generator) < 100_000 / it:
            self.buffer.add(roll.angles, roll.values, idx, k)

    def step(self) -> dict:
        tr, cfg, b = self.trainer, self.trainer.config, self.trainer.budget
        dev = tr.device
        self.collect()
        rep = self.buffer.sample(cfg.batch)
        angles, values = rep.angles.to(dev), rep.values.to(dev)
        images = dihedral_batch(tr.images[rep.index.to(dev)], rep.k)
        # Generator on the replayed partial scans; its normalised loss is the terminal cost.
        stats = tr._train_generator(images, angle_path(angles, b))
        cost = tr.last_cost
        starts = segment_starts(angles, b)
        penalty = edge_penalties(angles, b, cfg.edge_penalty)
        B, T = angles.shape
        a_state = tr.actor.initial_state(B)
        c_state = self.critic.initial_state(B)
        t_state = self.target.initial_state(B)
        q, q_mu, q_next = [], [], []
        for t in range(1, T):
            a_mu, a_state = tr.actor(values[:, t - 1], starts[:, t], a_state)
            qt, qmt, c_state = self.critic(values[:, t - 1], starts[:, t], angles[:, t], c_state,
                                           other=a_mu)
            with torch.no_grad():
                _, qn, t_state = self.target(values[:, t - 1], starts[:, t], angles[:, t],
                                             t_state, other=a_mu.detach())
            q.append(qt)
            q_mu.append(qmt)
            q_next.append(qn)
        q, q_mu, q_next = torch.stack(q, 1), torch.stack(q_mu, 1), torch.stack(q_next, 1)
        y = penalty + torch.cat([cfg.gamma * q_next[:, 1:], cost[:, None]], 1)
        critic_loss = ((q - y.detach()) ** 2).mean()
        actor_loss = q_mu.mean()
        self.critic_opt.zero_grad(set_to_none=True)
        self.actor_opt.zero_grad(set_to_none=True)
        critic_loss.backward(inputs=list(self.critic.parameters()), retain_graph=True)
        actor_loss.backward(inputs=list(tr.actor.parameters()))
        self.critic_opt.step()
        self.actor_opt.step()
        shrink_(tr.actor, self.critic, factor=cfg.weight_shrink)
        decay = 0.997 ** (1 + max(100_000 - tr.step, 0) / 10_000)
        with torch.no_grad():
            for pt, pc in zip(self.target.parameters(), self.critic.parameters()):
                pt.mul_(decay).add_(pc, alpha=1 - decay)
        return {**stats, "critic": critic_loss.item(), "actor_q": actor_loss.item(),
                "cost": cost.mean().item()}
