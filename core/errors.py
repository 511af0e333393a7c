"""User-facing errors: one line that names the problem and the fix."""

import functools
import sys


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, a layer that does not fit).

    The message is a single line that names the bad value and says what to do.
    Command-line entry points print it as ``error: <message>`` and exit with status 2.
    """


def cli_main(func):
    """Wrap a ``main(argv)`` so a :class:`UserError` becomes one line on stderr and exit 2."""

    @functools.wraps(func)
    def wrapper(argv=None):
        try:
            return func(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
