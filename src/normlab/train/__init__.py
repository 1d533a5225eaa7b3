"""The training loop and what it reports: `train(model, train_iter, test_iter, config) -> History`."""
from normlab.train.config import (BOOK_SETTINGS, ConfigError, DataConfig, ModelConfig, OptimConfig, RunConfig,
                                  TrainConfig)
from normlab.train.loop import (DivergenceError, History, Interrupted, Trainer, evaluate, init_weights,
                                resolve_device, seed_everything, train)

__all__ = ["BOOK_SETTINGS", "ConfigError", "DataConfig", "DivergenceError", "History", "Interrupted",
           "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "Trainer", "evaluate",
           "init_weights", "resolve_device", "seed_everything", "train"]
