"""Command-line basics every command shares: the parser whose errors are one line, and
flags made from a typed config dataclass (:class:`core.hwconfig.HwConfig`, the training
config)."""

import argparse
import dataclasses
import typing

from .errors import UserError


def parse_bool(text):
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _parse_widths(text):
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers such as 16,32, not {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse's usage block plus message; keep the one-line error and exit 2
        raise UserError(f"{message} (see --help)")


def add_config_arguments(parser, cls):
    """One flag per field of the config dataclass ``cls`` (``data_dir`` -> ``--data-dir``),
    each with its ``help`` metadata and default unset, so that a given flag can be told from
    the default.  Fields with ``metadata={"cli": False}`` get none."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        typ = {bool: parse_bool, list: _parse_widths}.get(hints[f.name], hints[f.name])
        default = f.default
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=typ, default=None,
            metavar=f.name.upper() if hints[f.name] is not bool else "BOOL",
            help=f"{f.metadata['help']} (default: {default})",
        )


def make_parser(prog, description, epilog=None):
    """An argument parser for a command whose errors are one line (:class:`core.errors.UserError`)."""
    return _Parser(prog=prog, description=description, epilog=epilog,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
