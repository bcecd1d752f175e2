"""Networks of the adaptive partial-STEM system (thesis ch. 5; arXiv:2004.02786).

* :class:`ScanGenerator` - the feed-forward CNN that completes a 96x96 partial scan (2 channels:
  probe values and visit mask) into the full image; thesis layer sizes with ``width=32,
  blocks=5`` (every convolution conv -> ReLU -> BatchNorm without scale, Xavier init).
* :class:`ScanActor` - a 2-layer recurrent core (LSTM or GRU) with skip connections and
  trainable initial states; from the last segment's observations and the current position it
  outputs the next segment's direction a = pi * tanh(linear(h)) [rad].
* :class:`ScanCritic` - the same kind of core over (observations, position, action); its head
  returns a positive predicted cost |linear(h)| for the replayed action and, on the same
  recurrent state, for any other action (the actor's), as RDPG needs.

Positions enter the recurrent cores as fractions of the image side mapped to [-1, 1]; actions
enter the critic as (cos a, sin a), so the angle's wrap-around is seamless.
"""
from __future__ import annotations

import math

import torch
from torch import nn

CORES = ("lstm", "gru")


class _ConvReLUBN(nn.Sequential):
    """conv -> ReLU -> BatchNorm with a shift but no scale (tf.contrib batch_norm defaults)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, transposed: bool = False,
                 momentum: float = 0.001) -> None:
        conv = (nn.ConvTranspose2d(cin, cout, 3, stride, 1, output_padding=stride - 1)
                if transposed else nn.Conv2d(cin, cout, 3, stride, 1))
        super().__init__(conv, nn.ReLU(inplace=True), _ShiftBN(cout, momentum))


class _ShiftBN(nn.BatchNorm2d):
    """BatchNorm2d (eps 1e-3) whose scale is fixed at 1 (only the shift is learnt)."""

    def __init__(self, channels: int, momentum: float) -> None:
        super().__init__(channels, eps=1e-3, momentum=momentum)
        self.weight.requires_grad_(False)


class _Residual(nn.Module):
    def __init__(self, ch: int, momentum: float) -> None:
        super().__init__()
        self.body = nn.Sequential(*(_ConvReLUBN(ch, ch, momentum=momentum) for _ in range(3)))
        self.norm = _ShiftBN(ch, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.body(x))


class ScanGenerator(nn.Module):
    """Partial-scan completion CNN: [B, 2, H, W] (values, mask) -> [B, 1, H, W].

    Args:
        width: channels of the first convolution (thesis 32); the encoder doubles it twice.
        blocks: residual blocks at 1/4 resolution (thesis 5).
        bn_momentum: BatchNorm running-statistics momentum (thesis 0.001 = decay 0.999; short
            runs need a faster one, e.g. 0.01, or their eval-mode statistics lag).

    H and W must be multiples of 4 (96 in the thesis).
    """

    def __init__(self, width: int = 32, blocks: int = 5, bn_momentum: float = 0.001) -> None:
        super().__init__()
        if width < 1 or blocks < 0:
            raise ValueError(f"width must be >= 1 and blocks >= 0, got {width}, {blocks}")
        self.config = {"width": int(width), "blocks": int(blocks), "bn_momentum": float(bn_momentum)}
        w, m = width, bn_momentum
        self.net = nn.Sequential(
            _ConvReLUBN(2, w, momentum=m), _ConvReLUBN(w, 2 * w, 2, momentum=m),
            _ConvReLUBN(2 * w, 4 * w, 2, momentum=m),
            *(_Residual(4 * w, m) for _ in range(blocks)),
            _ConvReLUBN(4 * w, 2 * w, 2, transposed=True, momentum=m),
            _ConvReLUBN(2 * w, w, 2, transposed=True, momentum=m),
            _ConvReLUBN(w, w, momentum=m), nn.Conv2d(w, 1, 3, 1, 1, bias=False))
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, partial: torch.Tensor) -> torch.Tensor:
        if partial.dim() != 4 or partial.shape[1] != 2:
            raise ValueError(f"partial must have shape [B, 2, H, W] (values, mask), got "
                             f"{list(partial.shape)}")
        if partial.shape[2] % 4 or partial.shape[3] % 4:
            raise ValueError(f"H and W must be multiples of 4, got {list(partial.shape[2:])}")
        return self.net(partial)


class _SkipCore(nn.Module):
    """Two recurrent cells; the input reaches both, the output is both hidden states.

    State: a tuple of per-layer states ((h, c) for LSTM, h for GRU), each [B, hidden].
    """

    def __init__(self, core: str, inputs: int, hidden: int) -> None:
        super().__init__()
        core = core.lower()
        if core not in CORES:
            raise ValueError(f"core must be one of {CORES}, got {core!r}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.core, self.hidden = core, int(hidden)
        cell = nn.LSTMCell if core == "lstm" else nn.GRUCell
        self.cell1 = cell(inputs, hidden)
        self.cell2 = cell(inputs + hidden, hidden)
        n = 2 if core == "lstm" else 1
        self.init = nn.Parameter(torch.zeros(2, n, hidden))  # trainable initial states

    def initial_state(self, batch: int) -> tuple:
        s = self.init[:, :, None, :].expand(-1, -1, batch, -1)
        if self.core == "lstm":
            return (s[0, 0], s[0, 1]), (s[1, 0], s[1, 1])
        return s[0, 0], s[1, 0]

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        s1 = self.cell1(x, state[0])
        h1 = s1[0] if self.core == "lstm" else s1
        s2 = self.cell2(torch.cat([x, h1], 1), state[1])
        h2 = s2[0] if self.core == "lstm" else s2
        return torch.cat([h1, h2], 1), (s1, s2)


def position_features(position: torch.Tensor, side: float) -> torch.Tensor:
    """(row, col) [px] -> fractions of the image side mapped to [-1, 1]."""
    return position * (2.0 / side) - 1.0


class ScanActor(nn.Module):
    """Recurrent policy: next segment direction from the last segment and the position.

    Args:
        core: "lstm" or "gru" (2 layers with skip connections).
        hidden: units per layer (thesis 256).
        probes: observations per segment (thesis 20).
        side: image side [px] used to scale positions (thesis 96).
    """

    def __init__(self, core: str = "lstm", hidden: int = 256, probes: int = 20,
                 side: int = 96) -> None:
        super().__init__()
        self.config = {"core": core, "hidden": int(hidden), "probes": int(probes), "side": int(side)}
        self.rnn = _SkipCore(core, probes + 2, hidden)
        self.out = nn.Linear(2 * hidden, 1, bias=False)
        nn.init.normal_(self.out.weight, std=0.01)  # start near a = 0 for every input

    def initial_state(self, batch: int) -> tuple:
        return self.rnn.initial_state(batch)

    def forward(self, values: torch.Tensor, position: torch.Tensor, state: tuple
                ) -> tuple[torch.Tensor, tuple]:
        """values [B, probes] (the last segment), position [B, 2] (next start, px) ->
        (angle [B] in (-pi, pi) [rad], new state)."""
        x = torch.cat([values, position_features(position, self.config["side"])], 1)
        h, state = self.rnn(x, state)
        return math.pi * torch.tanh(self.out(h)[:, 0]), state


class ScanCritic(nn.Module):
    """Recurrent cost model Q(history, action) >= 0 (the generator loss to come)."""

    def __init__(self, core: str = "lstm", hidden: int = 256, probes: int = 20,
                 side: int = 96) -> None:
        super().__init__()
        self.config = {"core": core, "hidden": int(hidden), "probes": int(probes), "side": int(side)}
        self.rnn = _SkipCore(core, probes + 4, hidden)
        self.out = nn.Linear(2 * hidden, 1, bias=False)

    def initial_state(self, batch: int) -> tuple:
        return self.rnn.initial_state(batch)

    def _input(self, values, position, angle):
        return torch.cat([values, position_features(position, self.config["side"]),
                          torch.cos(angle)[:, None], torch.sin(angle)[:, None]], 1)

    def forward(self, values: torch.Tensor, position: torch.Tensor, angle: torch.Tensor,
                state: tuple, other: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, tuple]:
        """Returns (Q for ``angle`` [B], Q for ``other`` on the same state or None, the state
        advanced with ``angle``)."""
        h, new_state = self.rnn(self._input(values, position, angle), state)
        q = self.out(h)[:, 0].abs()
        q_other = None
        if other is not None:
            h2, _ = self.rnn(self._input(values, position, other), state)
            q_other = self.out(h2)[:, 0].abs()
        return q, q_other, new_state
