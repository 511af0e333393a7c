"""What every other package reads: the integer contract (:mod:`core.arith`), the golden model
(:mod:`core.reference`), the export artifact, weight codes, the typed hardware config
(:class:`core.hwconfig.HwConfig`), board facts, the host link's protocol, and the
command-line basics.  It imports nothing of the project's other packages."""

__version__ = "0.1.0"
