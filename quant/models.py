"""The float networks the hardware runs: an MLP and a small CNN, as ``nn.Sequential``."""

from torch import nn

from .errors import UserError

MODELS = ("cnn", "mlp")


def cnn(image_shape, num_classes=10, channels=(16, 32)):
    """Small CNN: per stage a 3x3 conv (padding 1), BatchNorm, ReLU and 2x2 max-pool; then a linear layer.

    With the defaults on 1x28x28 MNIST: (B,1,28,28) -> (B,16,14,14) -> (B,32,7,7) -> (B,10).
    """
    c, h, w = image_shape
    layers = []
    for out in channels:
        if h < 2 or w < 2:
            raise UserError(f"image {image_shape} is too small for {len(channels)} pooling stages; use fewer channels")
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
    return nn.Sequential(*layers)


def mlp(image_shape, num_classes=10, hidden=(128, 64)):
    """MLP: flatten, then per hidden layer Linear, BatchNorm1d, ReLU; then the output Linear."""
    c, h, w = image_shape
    layers = [nn.Flatten()]
    width = c * h * w
    for out in hidden:
        layers += [nn.Linear(width, out, bias=False), nn.BatchNorm1d(out), nn.ReLU()]
        width = out
    layers += [nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def build_model(name, image_shape, num_classes=10):
    """The float model called ``name`` (one of :data:`MODELS`) for images of ``image_shape`` (C, H, W)."""
    builders = {"cnn": cnn, "mlp": mlp}
    if name not in builders:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return builders[name](tuple(image_shape), num_classes)
