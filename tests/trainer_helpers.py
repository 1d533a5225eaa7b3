"""Helpers for tests that stop and resume runs (tests/ is on sys.path through its conftest)."""
import io

import torch


class StopAt:
    """Ask for a stop after batch `step` of epoch `epoch` (0-based epoch), as Ctrl-C does."""

    def __init__(self, epoch, step):
        self.epoch, self.step = epoch, step

    def on_step_end(self, trainer):
        if (trainer.epoch, trainer.step) == (self.epoch, self.step):
            trainer.stop_requested = True


def roundtrip(state):
    """state through torch.save and torch.load(weights_only=True), as a checkpoint file takes it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
