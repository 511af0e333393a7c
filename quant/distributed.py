"""Data-parallel training over the processes torchrun starts, computing what one process computes.

``torchrun --nproc_per_node N -m quant.train ...`` starts N copies of the training.  Each
finds its place in the variables torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), read once by :func:`from_environment` into a
:class:`World`.  Plain ``python -m quant.train`` is the world of one process: nothing is
split, no collective runs and torch.distributed is never initialised.

What makes N processes train the model one process trains (up to the order of float sums):

- every process draws the same epoch permutation and cuts the same global batches
  (``--batch-size`` is the global batch); process ``r`` holds the samples at positions
  ``r, r + N, r + 2N, ...`` of each batch (``DistributedSampler``'s rule, applied to each
  batch, so no sample is padded or repeated and the last, short batch is split too);
- each process weights its loss by its share of the batch and the gradients are summed
  (:meth:`World.reduce_gradients`), so every process steps with the global batch's mean
  gradient;
- BatchNorm normalises by the statistics of the global batch (:meth:`World.batch_norm`,
  in the float network's BatchNorm layers and in the quantised layers' folded BatchNorm);
- what is drawn at random per batch (dropout masks, stochastic rounding of activations, the
  elements an activation quantiser samples) is drawn for the whole global batch from the
  generator all processes share, and each process takes its rows (:meth:`World.draw`,
  :meth:`World.batch_elements`).  So every process consumes the same random numbers, and
  the shared generator stays equal in all of them and to the 1-process run's.
"""

import contextlib
import hashlib
import itertools
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from core.errors import UserError


class _BatchNormOverProcesses(torch.autograd.Function):
    """BatchNorm's training forward and backward on this process's shard ``x`` of a global
    batch, with the global batch's statistics (the gradient through them included).

    Forward: one all-reduce of each process's per-channel mean and sum of squared deviations,
    combined exactly as Chan et al.'s parallel variance does (no ``E[x^2] - E[x]^2``); then
    torch's own BatchNorm kernel normalises by them.  Backward: BatchNorm's gradient is
    ``w / s * (dy - mean(dy) - x_hat * mean(dy * x_hat))``; torch's kernel computes it with
    the means over the shard and gives the shard's sums of ``dy`` and ``dy * x_hat``, and one
    all-reduce of those sums turns the means into the global batch's.  (Autograd through the
    formula written out in torch operations took about 2.5 times as long.)

    Returns ``(out, mean, var)``; ``var`` is the unbiased variance running statistics take.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, world):
        per_sample = x[0, 0].numel()  # positions per channel in one sample
        counts = torch.tensor([world.held(world.batch, r) * per_sample for r in range(world.size)],
                              dtype=x.dtype)[:, None]
        # the shard's mean and biased variance per channel by BatchNorm's own CPU kernel
        # (torch.var_mean over dims (0, 2, 3) is several times slower)
        mean_r, var_r = torch.batch_norm_update_stats(x, None, None, 0.0)
        every = world._gather(torch.stack([mean_r, var_r * counts[world.rank]]))  # (size, 2, C)
        means, m2s = every[:, 0], every[:, 1]
        n = counts.sum()
        mean = (counts * means).sum(0) / n
        m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0)
        var = m2 / n  # what BatchNorm normalises by
        out = F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.n = eps, n
        unbiased = m2 / (n - 1)
        ctx.mark_non_differentiable(mean, unbiased)
        return out, mean, unbiased

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, _mean, _var):
        x, weight, mean, var = ctx.saved_tensors
        w = weight if weight is not None else torch.ones_like(mean)
        invstd = torch.rsqrt(var + ctx.eps)
        # torch's kernel, given the global statistics, takes the means of dy and dy * x_hat
        # over this shard: dx = w / s * (dy - s1 / m - x_hat * s2 / m), s1 and s2 its sums
        dx, s2, s1 = torch.ops.aten.native_batch_norm_backward(
            dy, x, w, None, None, mean, invstd, True, ctx.eps, [True, True, True])
        sums = torch.stack([s1, s2])
        dist.all_reduce(sums)
        # the global means instead: dx += b + c * (x - mean)
        m = x.numel() // x.shape[1]
        b = w * invstd * (s1 / m - sums[0] / ctx.n)
        c = w * invstd.square() * (s2 / m - sums[1] / ctx.n)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        dx.addcmul_(x, c.view(shape)).add_((b - c * mean).view(shape))
        need_w, need_b = ctx.needs_input_grad[1:3]
        return dx, s2 if need_w else None, s1 if need_b else None, None, None


class World:
    """The processes of a run and this one's place among them.

    Parameters
    ----------
    rank : int
        This process, ``0 .. size - 1``; rank 0 writes the run directory and prints.
    size : int
        The number of processes (torchrun's ``WORLD_SIZE``).
    local_rank : int
        This process on its machine (the GPU it would use).
    """

    def __init__(self, *, rank=0, size=1, local_rank=0):
        if size < 1 or not 0 <= rank < size or local_rank < 0:
            raise ValueError(f"rank {rank} of {size} processes (local rank {local_rank}) is not a place in a world")
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.batch = None  # the global batch size while a split forward pass runs (:meth:`step`)
        self._connected = False

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    @property
    def main(self):
        """True in the process that writes the run directory and prints (rank 0)."""
        return self.rank == 0

    @property
    def sharded(self):
        """True while a forward pass runs on this process's part of a global batch
        split over several processes (inside :meth:`step`)."""
        return self.size > 1 and self.batch is not None

    # -- the batches ------------------------------------------------------------------------------
    def held(self, n, rank=None):
        """How many samples of a global batch of ``n`` the process ``rank`` (default: this one) holds."""
        rank = self.rank if rank is None else rank
        return len(range(rank, n, self.size))

    def shard(self, t):
        """This process's rows of a global-batch tensor ``t``: rows ``rank, rank + size, ...``."""
        return t if self.size == 1 else t[self.rank :: self.size].contiguous()

    @contextlib.contextmanager
    def step(self, n):
        """The forward pass inside runs on this process's shard of a global batch of ``n`` samples."""
        self.batch = n
        try:
            yield
        finally:
            self.batch = None

    def check_batches(self, n, batch_size):
        """Refuse a global batch size that leaves a process without a sample in some batch of an
        epoch of ``n`` training images (a one-line :class:`~core.errors.UserError`)."""
        if self.size == 1:
            return
        if batch_size < self.size:
            raise UserError(f"--batch-size {batch_size} is smaller than the {self.size} processes; the batch is "
                            f"the global one, split over the processes: use --batch-size {self.size} or more")
        last = n % batch_size
        if 0 < last < self.size:
            fits = next(b for b in itertools.count(batch_size + 1) if n % b == 0 or n % b >= self.size)
            raise UserError(f"with --batch-size {batch_size} the last batch of an epoch holds {last} of the {n} "
                            f"training images, fewer than the {self.size} processes; choose another --batch-size "
                            f"(e.g. {fits})")

    # -- the process group -----------------------------------------------------------------------
    def connect(self):
        """Join the other processes (``MASTER_ADDR:MASTER_PORT``, as torchrun sets them).

        The backend is gloo for CPU tensors and, where CUDA is available, NCCL for CUDA ones.
        quant.train computes on the CPU, so its collectives run on gloo.
        """
        if self.size == 1 or self._connected:
            return
        # torch.optim imports torch._dynamo; imported after init_process_group it keeps the
        # process group alive past destroy_process_group (torch 2.13), and gloo's worker
        # threads, still running at interpreter exit, abort the process now and then (SIGABRT)
        import torch._dynamo  # noqa: F401

        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=self.rank, world_size=self.size)
        self._connected = True

    def close(self):
        """Leave the process group (if :meth:`connect` joined one)."""
        if self._connected:
            dist.destroy_process_group()
            self._connected = False

    def barrier(self):
        """Wait until every process gets here."""
        if self.size > 1:
            dist.barrier()

    # -- collectives -----------------------------------------------------------------------------
    def sum(self, values):
        """The sums of a list of numbers over the processes (float64)."""
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def reduce_gradients(self, params):
        """Sum every gradient of ``params`` over the processes, one flat all-reduce per dtype.

        Each process weights its loss by its share of the global batch, so the *sum* is the
        global batch's mean gradient, bitwise the same in every process.  Not
        DistributedDataParallel: it averages (the weights would need a factor N, inexact for N
        not a power of two); it requires every trainable parameter to take part in each forward
        pass, and a layer's bias does not while BatchNorm normalises by batch statistics
        (:mod:`quant.layers`), so it would need ``find_unused_parameters``, a graph walk per
        step; and its overlap of communication with the backward pass buys little for these
        small networks on CPU.  Parameters without a gradient have none in every process
        (the processes run the same graph).
        """
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        for dtype in sorted({g.dtype for g in grads}, key=str):
            same = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in same])
            dist.all_reduce(flat)
            for g, part in zip(same, flat.split([g.numel() for g in same])):
                g.copy_(part.view_as(g))

    def _gather(self, local):
        """Every process's ``local`` stacked in rank order, the same in all of them: an
        all-reduce of a tensor in which each process fills its own slot.  The other slots
        hold -0.0, the one number whose sum with any ``v`` is ``v`` exactly (a signed zero
        included)."""
        every = local.new_full((self.size,) + local.shape, -0.0)
        every[self.rank] = local
        dist.all_reduce(every)
        return every

    def batch_norm(self, x, weight, bias, eps):
        """BatchNorm's training forward on this process's shard ``x`` with the statistics of the
        whole global batch (inside :meth:`step`), differentiable through them
        (:class:`_BatchNormOverProcesses`).

        Returns ``(out, mean, var)``: ``var`` is the unbiased variance that running statistics
        take; both without gradient.
        """
        return _BatchNormOverProcesses.apply(x, weight, bias, eps, self)

    def batch_elements(self, x, index):
        """Elements ``index`` of the flattened global batch (inside :meth:`step`), from this
        process's rows ``x``; the same tensor in every process."""
        per = x[0].numel()
        row, col = index // per, index % per
        mine = row % self.size == self.rank
        out = x.new_full(index.shape, -0.0)  # -0.0: see _gather
        out[mine] = x.reshape(-1)[(row[mine] // self.size) * per + col[mine]]
        dist.all_reduce(out)
        return out

    def draw(self, x, sample):
        """``sample(shape)`` (a random tensor) for the elements of ``x``: inside :meth:`step`,
        drawn for the whole global batch and this process's rows taken, so the draws equal
        the 1-process run's and every process consumes the same random numbers."""
        if not self.sharded:
            return sample(x.shape)
        return self.shard(sample((self.batch,) + tuple(x.shape[1:])))

    # -- the network -----------------------------------------------------------------------------
    def attach(self, net):
        """Make ``net`` compute on split batches what it computes on whole ones; returns it.

        Float BatchNorm and Dropout layers become :class:`GlobalBatchNorm1d`,
        :class:`GlobalBatchNorm2d` and :class:`GlobalDropout` (same parameters and state
        dict); quantised layers and activation quantisers (modules with a ``world``
        attribute) get this world.  One process: nothing to share, ``net`` is left as it is.
        """
        if self.size == 1:
            return net
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                cls = _GLOBAL.get(type(child))
                if cls is not None:
                    setattr(parent, name, cls.from_module(child, self))
        for m in net.modules():
            if hasattr(m, "world"):
                m.world = self
        return net

    def check_lockstep(self, net, when):
        """Raise if ``net``'s state (parameters and buffers) differs between processes: they
        must stay equal bit for bit; a difference is a bug (a draw not shared, say)."""
        if self.size == 1:
            return
        h = hashlib.sha256()
        for name, t in net.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests = [None] * self.size
        dist.all_gather_object(digests, h.hexdigest())
        if len(set(digests)) > 1:
            raise RuntimeError(f"the {self.size} processes' networks differ {when}; a random draw or a "
                               "statistic was not shared")


class _GlobalMixin:
    """A float layer that sees the global batch while its world splits the batch."""

    world = None

    @classmethod
    def from_module(cls, m, world):
        """The layer ``m`` as this class: the same settings and state dict, and ``world``."""
        new = cls(*cls._settings(m))
        new.load_state_dict(m.state_dict())
        new.train(m.training)
        new.world = world
        return new

    @property
    def _global(self):
        return self.training and self.world is not None and self.world.sharded


class _GlobalBatchNormMixin(_GlobalMixin):
    @staticmethod
    def _settings(m):
        return m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats

    def forward(self, x):
        if not self._global:
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average, as nn.BatchNorm keeps it
                factor = 1.0 / float(self.num_batches_tracked)
        out, mean, var = self.world.batch_norm(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(var, alpha=factor)
        return out


class GlobalBatchNorm1d(_GlobalBatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` normalising by the global batch's statistics in a split training step."""


class GlobalBatchNorm2d(_GlobalBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` normalising by the global batch's statistics in a split training step."""


class GlobalDropout(_GlobalMixin, nn.Dropout):
    """``nn.Dropout`` whose mask is drawn for the global batch in a split training step, so it
    is the 1-process run's mask (``F.dropout`` on CPU: ``x * bernoulli(1 - p) / (1 - p)``)."""

    @staticmethod
    def _settings(m):
        return m.p, m.inplace

    def forward(self, x):
        if not self._global or self.p == 0:
            return super().forward(x)
        keep = 1.0 - self.p
        mask = self.world.draw(x, lambda shape: x.new_empty(shape).bernoulli_(keep))
        return x * mask.div_(keep)


_GLOBAL = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d, nn.Dropout: GlobalDropout}


def from_environment(environ=None):
    """The :class:`World` torchrun describes in ``environ`` (default ``os.environ``); without
    ``WORLD_SIZE`` (plain ``python -m``), the world of one process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size, rank, local = (int(env.get(k, "")) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    except ValueError:
        raise UserError(f"WORLD_SIZE {env.get('WORLD_SIZE')!r}, RANK {env.get('RANK')!r} and LOCAL_RANK "
                        f"{env.get('LOCAL_RANK')!r} must be integers; start the processes with torchrun") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UserError(f"RANK {rank} of WORLD_SIZE {size} (LOCAL_RANK {local}) is no place among the processes; "
                        "start them with torchrun")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if size > 1 and not env.get(k)]
    if missing:
        raise UserError(f"WORLD_SIZE {size} without {' and '.join(missing)}: the processes cannot find each other; "
                        "start them with torchrun")
    if size > 1 and not dist.is_available():
        raise UserError(f"WORLD_SIZE {size}, but this PyTorch build has no torch.distributed; train in one process "
                        "or install a build with it")
    return World(rank=rank, size=size, local_rank=local)
