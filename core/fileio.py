"""Atomic file writes: a crash or Ctrl-C never leaves a half-written checkpoint or artifact."""

import json
import os
import pathlib
import tempfile


def write_atomic(path, write):
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    write_atomic(path, write)
