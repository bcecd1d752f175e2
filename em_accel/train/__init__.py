"""Training: adaptive learning rate clipping and (in later modules) loops and checkpoints."""
from .alrc import ALRC, CLRC, DALRC

__all__ = ["ALRC", "CLRC", "DALRC"]
