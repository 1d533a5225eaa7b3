"""The model zoo: every classic CNN of the book with any norm plugged in.

    from normlab.models import create_model, list_models, summary
    net = create_model("lenet_bn", norm="group")
    print(summary(net, (1, 1, 28, 28)).book())

Every builder takes the same norm options (see base.py and normlab.nn.blocks):

    norm           a name from normlab.nn.list_norms(); "none" for no norm layer (None keeps
                   the model's default: batch for lenet_bn, resnet18/20 and densenet)
    norm_position  "before_act" (conv → norm → act, the default) or "after_act" (conv → act → norm)
    norm_kwargs    passed to every norm layer, e.g. {"num_groups": 2} for "group"; momentum
                   "cumulative" means momentum=None (TOML has no null)
    fc_norm        (models with norms after Linear layers) the norm for those; default: norm
    num_classes=10, in_channels=1

and create_model drops options given as None, so each model's defaults stand.
"""
from .registry import create_model, list_models, model_defaults, register_model
from .summary import Summary, summary, inception_table
# importing a family registers its builders, in this order
from . import lenet, alexnet, vgg, nin, googlenet, resnet, densenet, mlp  # noqa: F401,E402

__all__ = ["create_model", "list_models", "model_defaults", "register_model", "summary", "Summary", "inception_table"]
