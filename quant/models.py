"""The float networks: the built-in MLP and CNN, a user's own, and the *spec* that records any of them.

A model reaches training in one of three ways (``--model``): a built-in name (``cnn``,
``mlp``) with its widths as config keys, ``package.module:factory`` naming a function that
returns an ``nn.Module``, or a ``[model]`` table of layers in the TOML config.  Each is
recorded as a **spec**: a JSON list with one entry per module of the ``nn.Sequential``
(``{"type": "conv", "out": 16, "kernel": 3, "padding": 1}``, ``{"type": "relu"}``, ...;
a ``residual`` entry holds its block's entries under ``layers``).  Input sizes are inferred
from the image, so the spec plus the image shape rebuilds the model exactly: checkpoints
and ``config.json`` hold it, and export, ``--resume`` and ``--init-from`` need no user code.
"""

import importlib
import inspect

from torch import nn

from core.errors import UserError

from .modules import Residual

MODELS = ("cnn", "mlp")

#: spec types, each with its keys and their defaults (``None``: required)
SPEC_KEYS = {
    "conv": {"out": None, "kernel": 3, "stride": 1, "padding": 0, "bias": True},
    "linear": {"out": 0, "bias": True},  # out 0: the number of classes
    "bn": {},
    "relu": {},
    "maxpool": {"kernel": 2, "stride": 0},  # stride 0: the kernel
    "avgpool": {"kernel": 2},
    "gap": {},
    "flatten": {},
    "dropout": {"p": 0.5},
    "residual": {"layers": None},
}


def cnn_spec(channels=(16, 32), kernel=3):
    """The built-in CNN: per width a conv (``kernel``, same padding), BatchNorm, ReLU and 2x2
    max-pool, then flatten and the logits layer."""
    if kernel % 2 == 0:
        raise UserError(f"--kernel must be odd for the cnn's same padding, not {kernel}")
    spec = []
    for out in channels:
        spec += [{"type": "conv", "out": int(out), "kernel": kernel, "padding": kernel // 2, "bias": False},
                 {"type": "bn"}, {"type": "relu"}, {"type": "maxpool", "kernel": 2}]
    return spec + [{"type": "flatten"}, {"type": "linear"}]


def mlp_spec(hidden=(128, 64)):
    """The built-in MLP: flatten, per hidden width Linear, BatchNorm1d and ReLU, then the logits layer."""
    spec = [{"type": "flatten"}]
    for out in hidden:
        spec += [{"type": "linear", "out": int(out), "bias": False}, {"type": "bn"}, {"type": "relu"}]
    return spec + [{"type": "linear"}]


def cnn(image_shape, num_classes=10, channels=(16, 32), kernel=3):
    """Small CNN; with the defaults on 1x28x28 MNIST: (B,1,28,28) -> (B,16,14,14) -> (B,32,7,7) -> (B,10)."""
    return spec_to_module(cnn_spec(channels, kernel), image_shape, num_classes)


def mlp(image_shape, num_classes=10, hidden=(128, 64)):
    return spec_to_module(mlp_spec(hidden), image_shape, num_classes)


def _where(path):
    return "layer " + ".".join(str(i) for i in path)


def _entry(raw, path):
    if not isinstance(raw, dict) or "type" not in raw:
        raise UserError(f"model {_where(path)}: {raw!r} is not a layer table with a 'type'")
    kind = raw["type"]
    if kind not in SPEC_KEYS:
        raise UserError(f"model {_where(path)}: unknown type {kind!r}; use one of {', '.join(SPEC_KEYS)}")
    keys = SPEC_KEYS[kind]
    unknown = sorted(set(raw) - set(keys) - {"type"})
    if unknown:
        raise UserError(f"model {_where(path)} ({kind}): unknown key {unknown[0]!r}; "
                        f"its keys are {', '.join(keys) or 'none'}")
    e = {"type": kind}
    for k, default in keys.items():
        v = raw.get(k, default)
        if v is None:
            raise UserError(f"model {_where(path)} ({kind}) needs the key {k!r}")
        if k == "layers":
            if not isinstance(v, list) or not v:
                raise UserError(f"model {_where(path)} (residual): 'layers' must be a non-empty list of layers")
        elif k == "p":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise UserError(f"model {_where(path)} (dropout): p must be in [0, 1), not {v!r}")
            v = float(v)
        elif k == "bias":
            if not isinstance(v, bool):
                raise UserError(f"model {_where(path)} ({kind}): bias must be true or false, not {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 0 or (v == 0 and k in ("kernel", "stride")
                                                                          and kind == "conv"):
            raise UserError(f"model {_where(path)} ({kind}): {k} must be a "
                            f"{'positive' if kind == 'conv' and k != 'padding' else 'non-negative'} integer, "
                            f"not {v!r}")
        e[k] = v
    return e


def spec_to_module(spec, image_shape, num_classes=10):
    """The ``nn.Sequential`` a spec describes for images of ``image_shape`` ``(C, H, W)``."""
    if not isinstance(spec, list) or not spec:
        raise UserError("the model spec must be a non-empty list of layers")
    seq, shape = _build(spec, tuple(image_shape), num_classes, ())
    return seq


def _build(spec, shape, num_classes, path):
    mods = []
    for i, raw in enumerate(spec):
        p = path + (i,)
        e = _entry(raw, p)
        kind = e["type"]
        spatial = len(shape) == 3
        if kind in ("conv", "maxpool", "avgpool", "gap") and not spatial:
            raise UserError(f"model {_where(p)} ({kind}) needs a (C, H, W) input, not the flat {shape}")
        if kind == "conv":
            m = nn.Conv2d(shape[0], e["out"], e["kernel"], stride=e["stride"], padding=e["padding"], bias=e["bias"])
            h = (shape[1] + 2 * e["padding"] - e["kernel"]) // e["stride"] + 1
            w = (shape[2] + 2 * e["padding"] - e["kernel"]) // e["stride"] + 1
            if h < 1 or w < 1:
                raise UserError(f"model {_where(p)} (conv): kernel {e['kernel']} does not fit the {shape[1]}x{shape[2]} "
                                "map; use a smaller kernel or more padding")
            shape = (e["out"], h, w)
        elif kind == "linear":
            if spatial:
                raise UserError(f"model {_where(p)} (linear) needs a flat input; put a flatten before it")
            out = e["out"] or num_classes
            m = nn.Linear(shape[0], out, bias=e["bias"])
            shape = (out,)
        elif kind == "bn":
            m = nn.BatchNorm2d(shape[0]) if spatial else nn.BatchNorm1d(shape[0])
        elif kind == "relu":
            m = nn.ReLU()
        elif kind in ("maxpool", "avgpool"):
            k = e["kernel"]
            s = e.get("stride") or k
            if shape[1] < k or shape[2] < k:
                raise UserError(f"model {_where(p)} ({kind}): a {k}x{k} window does not fit the "
                                f"{shape[1]}x{shape[2]} map; use fewer pooling stages")
            m = nn.MaxPool2d(k, s) if kind == "maxpool" else nn.AvgPool2d(k)
            shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
        elif kind == "gap":
            m = nn.AdaptiveAvgPool2d(1)
            shape = (shape[0], 1, 1)
        elif kind == "flatten":
            m = nn.Flatten()
            shape = (shape[0] * shape[1] * shape[2],) if spatial else shape
        elif kind == "dropout":
            m = nn.Dropout(e["p"])
        else:  # residual
            block, out = _build(e["layers"], shape, num_classes, p)
            if out != shape:
                raise UserError(f"model {_where(p)} (residual): its block maps {shape} to {out}; a residual add "
                                "needs both branches of the same shape")
            m = Residual(block)
        mods.append(m)
    return nn.Sequential(*mods), shape


def complete_spec(spec, num_classes):
    """``spec`` with every key written out (defaults filled, a logits layer's ``out`` set to
    ``num_classes``): the form a run records."""
    def walk(entries, path):
        out = []
        for i, raw in enumerate(entries):
            e = _entry(raw, path + (i,))
            if e["type"] == "linear" and not e["out"]:
                e["out"] = num_classes
            if e["type"] == "residual":
                e["layers"] = walk(e["layers"], path + (i,))
            out.append(e)
        return out
    if not isinstance(spec, list) or not spec:
        raise UserError("the model spec must be a non-empty list of layers")
    return walk(spec, ())


def module_to_spec(module, path=()):
    """The spec of ``module``: an ``nn.Sequential`` (nested ``Sequential`` s are flattened
    into it, keeping ``Residual`` blocks) of the layers :data:`SPEC_KEYS` names."""
    if not isinstance(module, nn.Sequential):
        raise UserError(f"a model must be an nn.Sequential (of torch.nn layers and quant.modules.Residual), "
                        f"not {type(module).__name__}")
    spec = []
    for i, m in enumerate(module):
        p = path + (i,)
        if isinstance(m, nn.Sequential):
            spec += module_to_spec(m, p)
        elif isinstance(m, nn.Conv2d):
            k, s, pad = m.kernel_size, m.stride, m.padding
            if (k[0] != k[1] or s[0] != s[1] or isinstance(pad, str) or pad[0] != pad[1] or m.groups != 1
                    or m.dilation != (1, 1) or m.padding_mode != "zeros"):
                raise UserError(f"{_where(p)} ({m}) is not supported: a conv needs a square kernel, equal strides and "
                                "paddings, groups=1, dilation=1 and zero padding")
            spec.append({"type": "conv", "out": m.out_channels, "kernel": k[0], "stride": s[0], "padding": pad[0],
                         "bias": m.bias is not None})
        elif isinstance(m, nn.Linear):
            spec.append({"type": "linear", "out": m.out_features, "bias": m.bias is not None})
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            spec.append({"type": "bn"})
        elif isinstance(m, nn.ReLU):
            spec.append({"type": "relu"})
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            kind = "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
            k = _square(m.kernel_size, p, m)
            s = _square(m.stride if m.stride is not None else m.kernel_size, p, m)
            if _square(m.padding, p, m) != 0 or m.ceil_mode or (kind == "avgpool" and s != k):
                raise UserError(f"{_where(p)} ({m}) is not supported: a pool needs padding 0 and floor mode"
                                + (", an average pool its stride equal to its kernel" if kind == "avgpool" else ""))
            e = {"type": kind, "kernel": k}
            if kind == "maxpool" and s != k:
                e["stride"] = s
            spec.append(e)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if _square(m.output_size, p, m) != 1:
                raise UserError(f"{_where(p)} ({m}) is not supported: an adaptive average pool must be global "
                                "(output size 1)")
            spec.append({"type": "gap"})
        elif isinstance(m, nn.Flatten):
            spec.append({"type": "flatten"})
        elif isinstance(m, nn.Dropout):
            spec.append({"type": "dropout", "p": float(m.p)})
        elif isinstance(m, Residual):
            block = m.block if isinstance(m.block, nn.Sequential) else nn.Sequential(m.block)
            spec.append({"type": "residual", "layers": module_to_spec(block, p)})
        else:
            raise UserError(f"{_where(p)} ({type(m).__name__}) is not a supported layer; use Conv2d, Linear, "
                            "BatchNorm, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout and "
                            "quant.modules.Residual")
    return spec


def _square(v, path, m):
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise UserError(f"{_where(path)} ({m}) is not supported: use a square window")
        v = v[0]
    return int(v)


def is_factory(name):
    return ":" in name


def call_factory(name, image_shape, num_classes):
    """Import ``package.module:function`` and call it (with ``image_shape`` and ``num_classes``
    as keywords where it takes them); the ``nn.Module`` it returns."""
    mod_name, _, fn_name = name.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or the user's module failing on import
        raise UserError(f"--model {name}: cannot import {mod_name} ({type(exc).__name__}: {exc}); "
                        "run from the folder that holds the package or add it to PYTHONPATH") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UserError(f"--model {name}: {mod_name} has no function {fn_name!r}")
    params = inspect.signature(fn).parameters
    given = {"image_shape": tuple(image_shape), "num_classes": num_classes}
    kwargs = {k: v for k, v in given.items() if k in params or any(
        q.kind == q.VAR_KEYWORD for q in params.values())}
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {name}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def resolve_spec(model, image_shape, num_classes=10, *, channels=None, hidden=None, kernel=3):
    """The spec of ``--model`` ``model``: a built-in with its widths, or a factory's model."""
    if model == "cnn":
        return cnn_spec(tuple(channels or (16, 32)), kernel)
    if model == "mlp":
        return mlp_spec(tuple(hidden or (128, 64)))
    if is_factory(model):
        return module_to_spec(call_factory(model, image_shape, num_classes))
    raise UserError(f"unknown model {model!r}; use cnn, mlp, package.module:factory or a [model] table in the "
                    "TOML config")


def build_model(name, image_shape, num_classes=10, **widths):
    """The float model ``name`` (a built-in or ``package.module:factory``) for images of ``image_shape``."""
    return spec_to_module(resolve_spec(name, image_shape, num_classes, **widths), image_shape, num_classes)
