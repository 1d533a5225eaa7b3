"""Normalization layers written from scratch, exact to torch.nn, and the factory that names them.

    from normlab.nn import BatchNorm2d, get_norm_layer
    norm_layer = get_norm_layer("group")      # channels first, like every norm here
    bn = norm_layer(64)
"""
from . import functional
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, D2LBatchNorm
from .factory import NORM_TYPES, convert_norms, create_norm, get_norm_layer, is_norm, list_norms
from .normalization import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm
from .research import (BatchMeanOnly, BatchRenorm, BatchVarOnly, DecorrelatedBatchNorm, FrozenBatchNorm,
                       GhostBatchNorm, IterNorm, RankGaussNorm, SwitchableNorm, freeze_norms)
from .replace import replace_modules
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "functional",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "D2LBatchNorm", "SyncBatchNorm",
    "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "BatchRenorm", "GhostBatchNorm", "DecorrelatedBatchNorm", "IterNorm", "RankGaussNorm",
    "FrozenBatchNorm", "SwitchableNorm", "BatchMeanOnly", "BatchVarOnly",
    "get_norm_layer", "create_norm", "list_norms", "convert_norms", "freeze_norms",
    "convert_sync_batchnorm", "replace_modules", "NORM_TYPES", "is_norm",
]
