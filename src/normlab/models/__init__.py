"""The model zoo: every classic CNN of the book with any norm plugged in.

    from normlab.models import create_model, list_models, summary
    net = create_model("lenet_bn", norm="group")
    print(summary(net, (1, 1, 28, 28)).book())
"""
from .registry import create_model, list_models, register_model
# importing a family registers its builders, in this order
from . import lenet, alexnet, vgg, nin, googlenet, resnet, densenet, mlp  # noqa: F401,E402

__all__ = ["create_model", "list_models", "register_model"]
