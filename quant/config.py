"""The typed training config: one dataclass from the command line (or a TOML file) to every artifact."""

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field

from core import arith
from core.errors import UserError

from .data import DATASETS
from .methods import METHODS, method_class
from .models import MODELS, complete_spec, is_factory, resolve_spec, spec_to_module


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` and in every checkpoint."""

    data: str = field(default="digits", metadata={
        "help": f"dataset: {' | '.join(DATASETS)} (digits is bundled, synthetic is generated: 3x16x16 colour "
                "images, 4 classes; mnist and cifar10 read --data-dir)"})
    data_dir: str = field(default=None, metadata={
        "help": "folder with the four MNIST IDX files (--data mnist), or with the CIFAR-10 binary version's "
                "data_batch_N.bin and test_batch.bin (--data cifar10)"})
    model: str = field(default="cnn", metadata={
        "help": f"network: {' | '.join(MODELS)}, package.module:factory (a function returning an nn.Module), "
                "or 'spec' for the [model] table of the TOML config (docs/networks.md)"})
    channels: list = field(default=None, metadata={"help": "cnn: conv widths, one pooled stage each, e.g. 16,32"})
    kernel: int = field(default=3, metadata={"help": "cnn: conv kernel size (odd; same padding)"})
    hidden: list = field(default=None, metadata={"help": "mlp: hidden widths, e.g. 128,64"})
    arch: list = field(default=None, metadata={
        "cli": False, "help": "the model's spec, one entry per layer (set from --model, or the [model] table)"})
    method: str = field(default="pow2", metadata={"help": f"quantisation: {' | '.join(METHODS)}"})
    wbits: int = field(default=4, metadata={"help": "weight code bits: sign + shift field with one code for zero"})
    abits: int = field(default=4, metadata={"help": "unsigned activation bits (also the input's)"})
    terms: int = field(default=1, metadata={"help": "powers of two per weight (1 = pure shift)"})
    per_channel: bool = field(default=True, metadata={"help": "one weight exponent window per output channel"})
    epochs: int = field(default=8, metadata={"help": "training epochs"})
    batch_size: int = field(default=64, metadata={
        "help": "minibatch size; under torchrun the global batch, split over the processes"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (cosine-annealed to zero)"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    bn_freeze: int = field(default=-1, metadata={
        "help": "epochs at the end during which BatchNorm is folded with running statistics in training "
                "too, so training is the deployed arithmetic (-1: half the epochs)"})
    # method options (read only by the method named)
    teacher: str = field(default=None, metadata={
        "help": "distill: run to distil from, any network, float or quantised, trained on the same data "
                "(default: --init-from)"})
    temperature: float = field(default=4.0, metadata={
        "help": "distill: softmax temperature of the soft targets (the authors' code: 2; 4 measured better here)"})
    distill_weight: float = field(default=0.5, metadata={
        "help": "distill: share of the soft-target loss (the rest is cross-entropy with the labels)"})
    learn_points: bool = field(default=True, metadata={
        "help": "distill: learn the quantisation points (differentiable quantisation); false: fixed powers of two"})
    points_init: str = field(default="pow2", metadata={
        "help": "distill: where the learned points start: pow2 (the window's powers of two) | quantiles (of the "
                "layer's |w|, the source's; on shift-only hardware two points can start on one level)"})
    redistribute_bits: bool = field(default=False, metadata={
        "help": "distill: share the code bits across layers by gradient norm, keeping their total (Polino et al.)"})
    layer_wbits: list = field(default=None, metadata={
        "cli": False, "help": "distill: code bits per weighted layer (set by --redistribute-bits)"})
    inq_schedule: str = field(default="auto", metadata={
        "help": "inq: accumulated portions in percent, e.g. 50,75,87.5,100; what is left is quantised at the end "
                "(auto: the paper's schedule for --wbits)"})
    inq_lr_scale: float = field(default=10.0, metadata={
        "help": "inq: the learning rate each retraining stage restarts at, as a multiple of --lr (cosine-annealed "
                "to zero within the stage)"})
    ttq_threshold: float = field(default=0.05, metadata={
        "help": "ttq: ternary threshold as a fraction of max|w| per output channel "
                "(per layer with --per-channel false), in (0, 1)"})
    stochastic: str = field(default="update", metadata={
        "help": "stochastic: what is rounded stochastically in training, a comma list of update (Gupta et al.: "
                "the stored fixed-point parameters after each step), acts, weights (re-sample the forward's "
                "weights each step), or none; the forward rounds the stored weights to nearest, as the export does"})
    update_frac_bits: int = field(default=14, metadata={
        "help": "stochastic: fraction bits FL of the 16-bit fixed-point words <16-FL, FL> the weights are "
                "rounded to after each update (Gupta et al.: 14)"})
    ptq_range: str = field(default="mse", metadata={
        "help": "ptq: weight window rule, max (no clipping) | mse (least squared weight error) | "
                "gauss (least expected error for Gaussian weights of the channel's rms)"})
    ptq_cle: bool = field(default=True, metadata={
        "help": "ptq: cross-layer equalisation (DFQ) of layers joined by ReLU before quantising"})
    ptq_bias_correction: bool = field(default=True, metadata={
        "help": "ptq: correct each bias for the expected error of its quantised weights (DFQ; "
                "input means from BatchNorm)"})
    ptq_clusters: int = field(default=0, metadata={
        "help": "ptq: Nayak et al.'s object-class clustering: group the classes into this many clusters by "
                "their classifier weights (no data) and also report the accuracy at the cluster level (0: off)"})
    ptq_class_clusters: list = field(default=None, metadata={
        "cli": False, "help": "ptq: the cluster of each class (set by --ptq-clusters)"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation and shuffling"})
    init_from: str = field(default=None, metadata={"help": "run directory (or checkpoint) to start from, e.g. a float run"})
    golden: int = field(default=32, metadata={"help": "test images whose every layer output goes into the artifact"})
    out: str = field(default="runs/latest", metadata={"help": "run directory for logs, checkpoints and the artifact"})

    def validate(self):
        """Refuse values no run can use, with a one-line :class:`UserError`."""
        if self.data not in DATASETS:
            raise UserError(f"unknown dataset {self.data!r}; choose --data from {', '.join(DATASETS)}")
        if self.model not in MODELS + ("spec",) and not is_factory(self.model):
            raise UserError(f"unknown model {self.model!r}; choose --model from {', '.join(MODELS)}, "
                            "package.module:factory, or give a [model] table in the TOML config")
        if self.model == "spec" and not self.arch:
            raise UserError("--model spec needs a [model] table of layers in the TOML config (docs/networks.md)")
        for name in ("channels", "hidden"):
            v = getattr(self, name)
            if v is not None and (not v or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                                   for c in v)):
                raise UserError(f"--{name} must be a comma list of positive widths, e.g. 16,32, not {v!r}")
        if self.kernel < 1:
            raise UserError(f"--kernel must be >= 1, not {self.kernel}")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose --method from {', '.join(METHODS)}")
        arith.check_bits(wbits=self.wbits, abits=self.abits, terms=self.terms)
        method_class(self.method).check(self)
        for name in ("epochs", "golden"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, not {getattr(self, name)}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, not {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, not {self.lr}")
        return self

    def resolve_arch(self, image_shape, num_classes):
        """Record the model's spec (:mod:`quant.models`) in ``arch`` if it is not there yet: what
        the checkpoint and ``config.json`` keep, so a run rebuilds without the user's code."""
        if self.arch is None:
            self.arch = resolve_spec(self.model, image_shape, num_classes, channels=self.channels,
                                     hidden=self.hidden, kernel=self.kernel)
        self.arch = complete_spec(self.arch, num_classes)
        return self.arch

    def build_model(self, image_shape, num_classes):
        """The float ``nn.Sequential`` of this run."""
        return spec_to_module(self.resolve_arch(image_shape, num_classes), image_shape, num_classes)

    @property
    def quantized(self):
        return self.method != "float"

    @property
    def bn_freeze_epochs(self):
        """Epochs at the end of training that fold BatchNorm with running statistics."""
        return self.epochs // 2 if self.bn_freeze < 0 else min(self.bn_freeze, self.epochs)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d, source):
        """Build from a mapping; unknown keys and wrong types are errors naming ``source``."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise UserError(f"{source}: unknown key {unknown[0]!r}; valid keys are {', '.join(names)}")
        kwargs = {}
        for k, v in d.items():
            kwargs[k] = _coerce(v, _field_type(names[k]), f"{source}: key {k!r}")
        return cls(**kwargs)


def _field_type(f):
    return typing.get_type_hints(TrainConfig)[f.name]


def _coerce(value, typ, where):
    if value is None:
        return None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool) or typ is not bool and isinstance(value, bool):
        raise UserError(f"{where} must be a {typ.__name__}, not {value!r}")
    if typ is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, typ):
        raise UserError(f"{where} must be a {typ.__name__}, not {value!r}")
    return value


def load_toml(path):
    """Read a TOML config (keys as :class:`TrainConfig` fields, flat or under ``[train]``)."""
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    model = d.pop("model", None) if isinstance(d.get("model"), dict) else None
    if set(d) == {"train"} and isinstance(d["train"], dict):
        d = dict(d["train"])
    if model is not None:
        layers = model.get("layers")
        unknown = sorted(set(model) - {"layers"})
        if unknown or not isinstance(layers, list) or not layers:
            raise UserError(f"config file {path}: the [model] table needs a list 'layers' of layer tables "
                            f"(and nothing else{', not ' + repr(unknown[0]) if unknown else ''}); see docs/networks.md")
        if "model" in d:
            raise UserError(f"config file {path} has both a [model] table and a model key; keep one")
        d["model"], d["arch"] = "spec", layers
    return d


def resolve(args, given_toml=None):
    """Defaults, then the TOML file, then command-line flags: the resolved, validated config."""
    d = load_toml(given_toml) if given_toml else {}
    cfg = TrainConfig.from_dict(d, given_toml or "config")
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(cfg, f.name, v)
    if any(getattr(args, k, None) is not None for k in ("model", "channels", "hidden", "kernel")) \
            and cfg.model != "spec":
        cfg.arch = None  # the command line names another network than the file's table
    return cfg.validate()


def explicit_flags(args):
    """Names of config fields given on the command line."""
    return [f.name for f in dataclasses.fields(TrainConfig) if getattr(args, f.name, None) is not None]
