"""``python -m quant.train``: quantisation-aware training that ends in a verified hardware artifact.

The loop, and what a run directory holds, are :mod:`quant.training`; this is its command
line, which ``torchrun --nproc_per_node N -m quant.train`` also runs (:mod:`quant.distributed`).
"""

import torch

from core.cli import add_config_arguments, make_parser
from core.errors import UserError, cli_main

from . import runs
from .config import TrainConfig, explicit_flags, resolve
from .distributed import from_environment
from .training import train


EXAMPLES = """examples:
  # float first, then power-of-two W4/A4 QAT from it (digits is bundled)
  python -m quant.train --method float --epochs 20 --out runs/float
  python -m quant.train --method pow2 --wbits 4 --abits 4 --init-from runs/float --out runs/pow2
  # MNIST from a folder of the four IDX files (gzipped or not)
  python -m quant.train --data mnist --data-dir DIR --method pow2 --terms 2 --out runs/mnist
  # colour images: the generated synthetic set (or --data cifar10 --data-dir DIR), a network of one's own
  python -m quant.train --data synthetic --model examples.my_nets:resnet_avg --out runs/own
  python -m quant.train --config examples/resnet_tiny.toml --out runs/resnet_tiny
  # continue an interrupted run, or extend it
  python -m quant.train --resume runs/mnist --epochs 12
  # 2 processes on this machine (--batch-size stays the global batch; README: several machines)
  torchrun --standalone --nproc_per_node 2 -m quant.train --data mnist --data-dir DIR --out runs/ddp
"""


@cli_main
def main(argv=None):
    parser = make_parser("python -m quant.train", __doc__.split("\n")[0].split(": ", 1)[1], epilog=EXAMPLES)
    add_config_arguments(parser, TrainConfig)
    parser.add_argument("--config", metavar="TOML", help="TOML file of config keys (flags override it)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    world = from_environment()  # torchrun's processes; one without it
    try:
        if args.resume:
            given = [f for f in explicit_flags(args) if f != "epochs"]
            if given or args.config:
                raise UserError("--resume continues with the run's saved config; only --epochs may be given with it")
            state = runs.load_checkpoint(args.resume)
            cfg = state["config"]
            cfg.out = str(runs.checkpoint_path(args.resume).parent)
            if args.epochs is not None:
                cfg.epochs = args.epochs
            cfg.validate()
            train(cfg, resume=True, progress=not args.no_progress, world=world)
        else:
            cfg = resolve(args, args.config)
            train(cfg, progress=not args.no_progress, world=world)
    # every process refuses or stops alike; rank 0 prints the one line (cli_main)
    except UserError:
        if world.main:
            raise
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if world.main:
            raise
        raise SystemExit(130) from None
    finally:
        world.close()


if __name__ == "__main__":
    main()
