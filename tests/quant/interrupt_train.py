"""``python -m tests.quant.interrupt_train EPOCHS ARGS...``: ``quant.train`` with ``ARGS``, stopped as
Ctrl-C would stop it when epoch ``EPOCHS + 1`` is about to start, so the checkpoint holds
``EPOCHS`` epochs of a longer schedule.  Run under torchrun by ``tests/quant/test_ddp.py``: every
process stops at the same point (the epochs end at a barrier after rank 0's checkpoint)."""

import sys

from quant import train, training


def main(argv):
    stop, args = int(argv[0]), argv[1:]
    epochs_started = 0
    batches = training.batches

    def stop_before_epoch(*a, **kw):  # quant.training cuts each epoch's batches with this
        nonlocal epochs_started
        if epochs_started == stop:
            raise KeyboardInterrupt
        epochs_started += 1
        return batches(*a, **kw)

    training.batches = stop_before_epoch
    train.main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
