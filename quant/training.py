"""The training loop behind ``python -m quant.train``: quantisation-aware training that ends
in a verified hardware artifact (:func:`train`), several runs at once (:func:`train_all`), and
the accuracy of a network (:func:`evaluate`).

A run directory holds ``config.json`` (the resolved config), ``log.jsonl`` (one JSON line
per epoch), ``checkpoint.pt`` (written atomically after every epoch: model, optimiser,
scheduler, epoch, config), ``artifact.npz`` (the hardware artifact, quantised methods) and
``summary.json`` (float, quantised and integer-reference accuracy, mismatch count, seconds
per epoch).

Under ``torchrun --nproc_per_node N -m quant.train`` the N processes train one model on
global batches split over them (:mod:`quant.distributed`); rank 0 writes the run directory,
evaluates, exports and verifies.
"""

import contextlib
import json
import pathlib
import sys
import time

import torch
from tqdm import tqdm

from core.errors import UserError
from core.fileio import write_json

from . import runs
from .config import TrainConfig
from .data import batches, load_dataset
from .distributed import World
from .methods import get_method
from .runs import export_network
from .verify import compare


@torch.no_grad()
def evaluate(model, x, y, *, batch=1000):
    """Top-1 accuracy in eval mode (for a QuantNet: exactly the deployed arithmetic)."""
    was = model.training
    model.eval()
    correct = 0
    for s in range(0, x.shape[0], batch):
        correct += (model(x[s : s + batch]).argmax(1) == y[s : s + batch]).sum().item()
    model.train(was)
    return correct / max(1, x.shape[0])


def _check_compatible(cfg, src, path):
    for key in ("model", "data"):
        if getattr(src, key) != getattr(cfg, key):
            raise UserError(f"--init-from {path} was trained with --{key} {getattr(src, key)}, "
                            f"this run uses --{key} {getattr(cfg, key)}; they must match")
    if src.arch is not None and src.arch != cfg.arch:
        raise UserError(f"--init-from {path} was trained with another network of --model {cfg.model} "
                        "(its layers or widths differ); give the same layers")


def initial_network(cfg, dataset, method):
    """The network to train, set up by ``method``: fresh, or from ``cfg.init_from``.

    Returns ``(net, float_accuracy, source)``.
    """
    torch.manual_seed(cfg.seed)
    if not cfg.init_from:
        net = runs.build_network(cfg, dataset.image_shape, dataset.num_classes, method=method)
        if cfg.quantized:
            method.setup(net, dataset, None)
        return net, None, None
    src_net, state = runs.load_network(cfg.init_from)
    _check_compatible(cfg, state["config"], cfg.init_from)
    src_cfg = state["config"]
    float_acc = evaluate(src_net, dataset.test_x, dataset.test_y) if not src_cfg.quantized else None
    if not cfg.quantized:
        if src_cfg.quantized:
            raise UserError(f"--init-from {cfg.init_from} is quantised ({src_cfg.method}); a float run starts from a float run")
        return src_net, float_acc, cfg.init_from
    if not src_cfg.quantized:
        net = runs.build_network(cfg, dataset.image_shape, dataset.num_classes, float_model=src_net, method=method)
        method.setup(net, dataset, src_cfg)
        return net, float_acc, cfg.init_from
    # a quantised start (e.g. 3-bit from a 4-bit run): its latent float weights, BatchNorm and
    # activation exponents carry over; the new quantisers apply from the first step
    net = runs.build_network(cfg, dataset.image_shape, dataset.num_classes, method=method)
    try:
        net.load_state_dict(src_net.state_dict())
    except RuntimeError:
        raise UserError(f"--init-from {cfg.init_from} ({src_cfg.method}) does not fit --method {cfg.method}; "
                        f"start from a float run") from None
    method.setup(net, dataset, src_cfg)
    return net, None, None


def load_teacher(cfg):
    """The network a distilling method learns from (``--teacher``, else ``--init-from``): any run,
    float or quantised, of any network, trained on the same data (its eval-mode outputs are the
    soft targets)."""
    path = cfg.teacher or cfg.init_from
    if not path:
        raise UserError(f"--method {cfg.method} distils from a teacher network: give --teacher RUN_DIR "
                        f"(or --init-from a run)")
    teacher, state = runs.load_network(path)
    if state["config"].data != cfg.data:
        raise UserError(f"--teacher {path} was trained with --data {state['config'].data}, this run uses "
                        f"--data {cfg.data}; they must match")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Trainer:
    """The optimiser and learning-rate schedule of a run (Adam, cosine-annealed to zero).

    A method may restart the schedule (INQ resets the learning rate at each partition step).
    """

    def __init__(self, net, cfg, method):
        self.cfg = cfg
        groups = method.param_groups(net)
        for g in groups:
            g["lr"] = g.get("lr_scale", 1.0) * cfg.lr
        self.opt = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(1, cfg.epochs))
        self.restarts = False

    def restart_lr(self, epochs):
        """Back to ``--lr``, cosine-annealed to zero over the next ``epochs`` epochs; Adam's moments reset."""
        self.restarts = True
        self.opt.state.clear()
        for g in self.opt.param_groups:
            g["lr"] = g["initial_lr"] = g.get("lr_scale", 1.0) * self.cfg.lr
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(1, epochs))

    def load(self, state):
        if state.get("optimizer"):
            self.opt.load_state_dict(state["optimizer"])
        if state.get("scheduler"):
            self.sched.load_state_dict(state["scheduler"])
            if not state["extra"].get("lr_restarts"):
                self.sched.T_max = max(1, self.cfg.epochs)


def check_out(cfg):
    """Refuse an ``--out`` that holds another run (one of a different config), so a run is never
    overwritten by an unrelated one; the same config may train again (a rerun)."""
    out = pathlib.Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run directory; choose another --out")
    if not (out / runs.CONFIG).is_file():
        return
    try:
        theirs = json.loads((out / runs.CONFIG).read_text())
    except (OSError, ValueError):
        raise UserError(f"--out {out} holds a run whose {runs.CONFIG} is unreadable; choose another --out") from None
    ours = cfg.to_dict()
    keys = sorted(k for k in set(ours) | set(theirs) if k not in ("out", "arch") and ours.get(k) != theirs.get(k))
    if keys:
        k = keys[0]
        raise UserError(f"--out {out} holds another run ({k} {theirs.get(k)!r}, not {ours.get(k)!r}); choose another "
                        f"--out, continue it with --resume {out}, or remove it first")


def train(cfg, *, resume=False, progress=True, world=None):
    """Train per ``cfg`` into ``cfg.out``; export and verify quantised models.

    ``world`` (a :class:`quant.distributed.World`, default one process) is this process's
    place among the processes that train together.  Returns the summary (None in the
    processes other than rank 0).
    """
    world = World() if world is None else world
    out = pathlib.Path(cfg.out)
    if not resume:
        check_out(cfg)
    dataset = load_dataset(cfg.data, cfg.data_dir)
    world.check_batches(dataset.train_x.shape[0], cfg.batch_size)
    if cfg.arch is None and cfg.init_from and not resume:
        src = runs.load_checkpoint(cfg.init_from)["config"]
        if src.model == cfg.model:
            cfg.arch = src.arch  # the same network as the run it starts from (a factory is not called again)
    cfg.resolve_arch(dataset.image_shape, dataset.num_classes)
    method = get_method(cfg)
    start_epoch, float_acc, float_source = 0, None, None
    t_setup = time.perf_counter()
    if resume:
        net, state = runs.load_network(out, method=method)
        start_epoch = state["epoch"]
        float_acc, float_source = state["extra"].get("float_accuracy"), state["extra"].get("float_source")
    else:
        net, float_acc, float_source = initial_network(cfg, dataset, method)
    if method.needs_teacher:
        method.teacher = load_teacher(cfg)
    setup_seconds = time.perf_counter() - t_setup
    world.connect()
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / runs.CONFIG, cfg.to_dict())

    net = world.attach(net)  # before the optimiser takes its parameters
    trainer = Trainer(net, cfg, method)
    if resume:
        trainer.load(state)
        torch.set_rng_state(state["rng"])
    epochs = cfg.epochs if method.trains else 0
    if world.main:
        on = f"; {world.size} processes" if world.size > 1 else ""
        print(f"{dataset.describe()}; {cfg.model}, method {method.describe()}; epochs {start_epoch}..{epochs}{on}",
              file=sys.stderr)

    extra = {"float_accuracy": float_acc, "float_source": float_source,
             "setup_seconds": round(setup_seconds, 3) if not resume else state["extra"].get("setup_seconds")}
    epoch_seconds = []
    log_mode = "a" if resume else "w"
    with open(out / runs.LOG, log_mode) if world.main else contextlib.nullcontext() as log:
        for epoch in range(start_epoch, epochs):
            steps = -(-dataset.train_x.shape[0] // cfg.batch_size)
            if cfg.quantized:
                net.freeze_bn(method.bn_frozen(epoch))
                net.start_epoch(epoch * steps)
                method.epoch_start(net, epoch, trainer)
            extra["lr_restarts"] = trainer.restarts
            net.train()
            # the same global batches in every process; each takes its shard of each
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            it = batches(dataset.train_x, dataset.train_y, cfg.batch_size, shuffle=True, generator=gen)
            bar = tqdm(it, total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                       disable=not (progress and world.main), file=sys.stderr)
            t0 = time.perf_counter()
            loss_sum, seen = 0.0, 0
            for xb, yb in bar:
                n = xb.shape[0]
                xb, yb = world.shard(xb), world.shard(yb)
                with world.step(n):
                    loss = method.loss(net(xb), yb, xb)
                trainer.opt.zero_grad(set_to_none=True)
                # this process's share of the global batch's mean loss (1 in one process): the
                # gradients summed over the processes are the global batch's mean gradient
                (loss * (xb.shape[0] / n)).backward()
                world.reduce_gradients(net.parameters())
                method.before_step(net)
                trainer.opt.step()
                method.after_step(net)
                loss_sum += loss.item() * xb.shape[0]
                seen += xb.shape[0]
            seconds = time.perf_counter() - t0
            epoch_seconds.append(seconds)
            loss_sum, seen = world.sum([loss_sum, seen])
            trainer.sched.step()
            world.check_lockstep(net, f"after epoch {epoch + 1}")
            if world.main:
                acc = evaluate(net, dataset.test_x, dataset.test_y)
                line = {"epoch": epoch + 1, "loss": round(loss_sum / seen, 5), "test_accuracy": acc,
                        "lr": trainer.opt.param_groups[0]["lr"], "seconds": round(seconds, 3)}
                print(f"epoch {epoch + 1}/{epochs}  loss {line['loss']:.4f}  test {100 * acc:.2f}%  {seconds:.1f}s",
                      file=sys.stderr)
                runs.save_checkpoint(out / runs.CHECKPOINT, model=net, optimizer=trainer.opt,
                                     scheduler=trainer.sched, epoch=epoch + 1, cfg=cfg,
                                     image_shape=dataset.image_shape, num_classes=dataset.num_classes, extra=extra)
                # the log line only after the checkpoint holds the epoch, so a resume never repeats it
                log.write(json.dumps(line) + "\n")
                log.flush()
            # no process starts the next epoch before the checkpoint holds this one
            world.barrier()
    if cfg.quantized:
        method.finish(net)
    if world.main and (epochs == 0 or start_epoch >= epochs or cfg.quantized):
        # the final state (after ``finish``) is what the checkpoint keeps and the artifact exports
        runs.save_checkpoint(out / runs.CHECKPOINT, model=net, optimizer=trainer.opt, scheduler=trainer.sched,
                             epoch=max(start_epoch, epochs), cfg=cfg, image_shape=dataset.image_shape,
                             num_classes=dataset.num_classes, extra=extra)
    summary = finish(net, cfg, dataset, out, extra, epoch_seconds, method) if world.main else None
    world.barrier()
    return summary


def _train_quietly(cfg_dict):
    """One run in a worker process, with one intra-op thread so that workers share the cores."""
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(cfg_dict, "sweep").validate()
    train(cfg, progress=False)
    return cfg.out


def train_all(configs, jobs=1):
    """Train every config whose run is not already finished (:func:`quant.runs.finished`),
    ``jobs`` at a time, with a progress line per run on stderr."""
    import concurrent.futures

    todo = [c for c in configs if runs.finished(c) is None]
    print(f"{len(configs) - len(todo)} runs cached, {len(todo)} to train", file=sys.stderr)
    t0 = time.perf_counter()
    if jobs <= 1 or len(todo) <= 1:
        for i, c in enumerate(todo, 1):
            _train_quietly(c.to_dict())
            print(f"[{i}/{len(todo)}] {c.out}  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_train_quietly, c.to_dict()) for c in todo]
        for i, f in enumerate(concurrent.futures.as_completed(futures), 1):
            print(f"[{i}/{len(todo)}] {f.result()}  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


def finish(net, cfg, dataset, out, extra, epoch_seconds, method=None):
    """Evaluate, export and verify; write and print ``summary.json`` (with ``method``'s own
    figures, :meth:`quant.methods.base.Method.summary`)."""
    acc = evaluate(net, dataset.test_x, dataset.test_y)
    summary = {
        "method": cfg.method, "model": cfg.model, "data": cfg.data,
        "wbits": cfg.wbits if cfg.quantized else None, "abits": cfg.abits if cfg.quantized else None,
        "terms": cfg.terms if cfg.quantized else None,
        "float_accuracy": acc if not cfg.quantized else extra["float_accuracy"],
        "float_source": "this run" if not cfg.quantized else extra["float_source"],
        "quantized_accuracy": acc if cfg.quantized else None,
        "reference_accuracy": None, "logit_mismatches": None, "prediction_mismatches": None,
        "test_images": int(dataset.test_x.shape[0]),
        "seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 3) if epoch_seconds else None,
        "train_seconds": round(sum(epoch_seconds) + (extra.get("setup_seconds") or 0.0), 3),
        "artifact": None,
    }
    if cfg.quantized:
        path = out / runs.ARTIFACT
        network, taps = export_network(net, cfg, dataset, path, golden=cfg.golden,
                                       meta={"quantized_accuracy": acc})
        agree = compare(net, taps, network, dataset.test_x, dataset.test_y.numpy())
        summary.update(reference_accuracy=agree.reference_accuracy,
                       logit_mismatches=agree.logit_mismatches + agree.torch_int_mismatches,
                       prediction_mismatches=agree.prediction_mismatches, artifact=runs.ARTIFACT,
                       terms=max(layer.terms for layer in network.layers if layer.weighted),
                       acc_bits=[layer.arith.acc_bits for layer in network.layers if layer.weighted])
        if method is not None:
            summary.update(method.summary(net, dataset))
    write_json(out / runs.SUMMARY, summary)
    _print_summary(summary, out)
    return summary


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def _print_summary(s, out):
    rows = [("float accuracy", _pct(s["float_accuracy"]) + (f"  ({s['float_source']})" if s["float_source"] else ""))]
    if s["quantized_accuracy"] is not None:
        rows += [
            (f"quantised accuracy (W{s['wbits']}/A{s['abits']})", _pct(s["quantized_accuracy"])),
            ("integer reference accuracy", _pct(s["reference_accuracy"])),
            ("logit mismatches / predictions differing",
             f"{s['logit_mismatches']} / {s['prediction_mismatches']} of {s['test_images']} test images"),
        ] + ([("class-cluster accuracy (chance)", f"{_pct(s['cluster_accuracy'])}  ({_pct(s['cluster_chance'])})")]
             if "cluster_accuracy" in s else []) + [
            ("artifact", str(out / s["artifact"])),
        ]
    rows.append(("seconds per epoch", "-" if s["seconds_per_epoch"] is None else f"{s['seconds_per_epoch']:.2f}"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
