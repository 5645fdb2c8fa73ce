"""The autoencoder of the deep k-means methods: an MLP d-500-500-2000-K with a mirrored decoder.

ReLU after every hidden layer, a linear embedding of size K (the number of clusters) and a linear
reconstruction, as in DEC/IDEC, DCN, DKM and Roy (ICPR 2024).  Plain PyTorch.

``init`` picks the initial weights: ``"torch"`` (PyTorch's ``nn.Linear`` default, uniform with bound
1/sqrt(fan_in) for weights and biases) or ``"glorot"`` (Glorot/Xavier uniform weights and zero biases, the
default of TensorFlow's ``tf.layers.dense``, which the DKM reference implementation builds its autoencoder
with; DKM's paper is where the AEKM baseline of Roy's table comes from).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Autoencoder", "unwrap", "INITS"]

INITS = ("torch", "glorot")


def _mlp(sizes, final_linear: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or not final_linear:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """``forward(x) -> (z, x_hat)``: embedding (n, K) and reconstruction (n, d)."""

    def __init__(self, input_dim: int = 784, embedding_dim: int = 10, hidden=(500, 500, 2000), init: str = "torch"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"The 'init' parameter of Autoencoder must be a str among {set(INITS)}. "
                             f"Got {init!r} instead.")
        self.input_dim = int(input_dim)
        self.embedding_dim = int(embedding_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.init = init
        self.encoder = _mlp([self.input_dim, *self.hidden, self.embedding_dim])
        self.decoder = _mlp([self.embedding_dim, *reversed(self.hidden), self.input_dim])
        if init == "glorot":
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)
        return z, self.decoder(z)

    def config(self) -> dict:
        return {"input_dim": self.input_dim, "embedding_dim": self.embedding_dim, "hidden": list(self.hidden),
                "init": self.init}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)
