"""Training: adaptive learning rate clipping, the training loop, checkpoints and metrics."""
from .alrc import ALRC, CLRC, DALRC
from .checkpoint import load_checkpoint, save_checkpoint, save_weights
from .loop import Trainer, TrainConfig, huberised, lr_factor, read_log
from .metrics import mean_and_sem, mse, psnr, ssim, ssim_numpy

__all__ = ["ALRC", "CLRC", "DALRC", "Trainer", "TrainConfig", "huberised", "lr_factor",
           "read_log", "load_checkpoint", "save_checkpoint", "save_weights", "mean_and_sem",
           "mse", "psnr", "ssim", "ssim_numpy"]
