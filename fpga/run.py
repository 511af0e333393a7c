"""``python -m fpga.run``: classify images on the board, over its UART host link.

The client asks the board what it runs (INFO), checks the images fit it, then sends one
CLASSIFY per image and prints the class and logits the board answers (frames:
:mod:`core.protocol`).  Images are ``.png``/``.pgm`` files (a colour picture as RGB for a
3-channel network, as its luma for a 1-channel one), ``.npy`` arrays of shape ``(C, H,
W)`` or ``(N, C, H, W)`` (uint8 pixels 0..255, or floats in [0, 1]) and IDX image files (``*-idx3-ubyte``, MNIST's format, N images each).  Each image
becomes input codes with the project's input quantiser (:func:`quantize`), sent in
``(y, x, c)`` raster order.

With ``--artifact`` the board's INFO is checked against the exported model and every
answer is compared with the integer reference (:func:`core.reference.predict`); the exit
status is 1 when any differs.  A board ERROR reply, or a reply that fails its CRC, is
reported and that image sent once more; anything else that goes wrong is one line and
exit status 2.

:class:`Board` talks over any transport with ``write(bytes)`` and ``read(n)`` (``read``
returns at most ``n`` bytes, fewer or none once a short wait passes): a pyserial port, a
pseudo-terminal, or a fake in a test.
"""

import pathlib
import sys
import time
from dataclasses import dataclass

import numpy as np

from core import protocol as P
from core.cli import make_parser
from core.errors import UserError, cli_main

DEFAULT_BAUD = 115200
DEFAULT_TIMEOUT = 5.0
#: How long one ``read`` of the serial port waits before it returns what it has.
READ_WAIT = 0.05
#: The longest reply: a RESULT of 255 classes.
MAX_REPLY = 1 + P.LOGIT_BYTES * 255
PICTURE_SUFFIXES = (".png", ".pgm")


class LinkError(UserError):
    """The board's reply did not come, or came garbled or unexpected."""


class ReplyTimeout(LinkError):
    pass


class GarbledReply(LinkError):
    pass


class BoardError(LinkError):
    """The board answered ERROR; ``code`` is its error code."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


_ERROR_FIX = {
    P.BAD_CHECKSUM: "the frame was garbled on the way; check the cable and that --baud matches the design",
    P.BAD_LENGTH: "the image does not have as many codes as the board's network takes",
    P.UNKNOWN_TYPE: "the board speaks another protocol version; rebuild its bitstream with this checkout",
    P.BAD_CODE: "an input code is wider than the board's input bits",
}


class Board:
    """The board at the other end of ``transport``.

    Parameters
    ----------
    transport
        Anything with ``write(bytes)`` and ``read(n)`` (see the module docstring).
    timeout : float
        Seconds to wait for each reply.
    """

    def __init__(self, transport, *, timeout=DEFAULT_TIMEOUT):
        self.transport = transport
        self.timeout = timeout
        self.model = None  # the ModelInfo, once asked

    def request(self, frame, what, reply_type):
        """Send ``frame`` (bytes) and return the payload of the reply of ``reply_type``.

        Raises :class:`ReplyTimeout`, :class:`GarbledReply` (CRC failed), :class:`BoardError`
        (an ERROR reply) or :class:`LinkError` (another reply); ``what`` names the request
        in their messages.
        """
        reset = getattr(self.transport, "reset_input_buffer", None)
        if reset is not None:
            reset()  # nothing stale from an earlier, garbled exchange
        self.transport.write(frame)
        flush = getattr(self.transport, "flush", None)
        if flush is not None:
            flush()
        decoder = P.FrameDecoder(max_payload=MAX_REPLY)
        deadline = time.monotonic() + self.timeout
        while True:
            chunk = self.transport.read(decoder.wanted())
            frames = decoder.feed(chunk) if chunk else []
            if frames:
                reply = frames[0]
                break
            if time.monotonic() > deadline:
                heard = f" (only {decoder.pending + decoder.skipped} bytes that made no frame)" if decoder.pending \
                    or decoder.skipped else ""
                raise ReplyTimeout(f"no reply from the board to {what} within {self.timeout:g} s{heard}; check that it "
                                   f"is programmed with the network design, that --port is its UART and --baud the "
                                   f"design's rate, or give a longer --timeout")
            if not chunk:
                time.sleep(0.001)  # a transport that does not wait
        if not reply.crc_ok:
            raise GarbledReply(f"the board's reply to {what} failed its CRC; the line is noisy or --baud is not "
                               f"the design's rate")
        if reply.type == P.ERROR:
            code = P.parse_error(reply.payload) if len(reply.payload) == 1 else -1
            raise BoardError(f"the board answered ERROR ({P.error_name(code)}) to {what}; "
                             f"{_ERROR_FIX.get(code, 'rebuild its bitstream with this checkout')}", code)
        if reply.type != reply_type:
            raise LinkError(f"the board answered {P.TYPE_NAMES.get(reply.type, f'type 0x{reply.type:02X}')} to "
                            f"{what}, expected {P.TYPE_NAMES[reply_type]}; rebuild its bitstream with this checkout")
        return reply.payload

    def _parse(self, parse, payload, what):
        try:
            return parse(payload)
        except P.ProtocolError as exc:
            raise LinkError(f"the board's reply to {what} does not parse ({exc}); rebuild its bitstream with "
                            f"this checkout") from None

    def info(self):
        """The :class:`core.protocol.ModelInfo` of the network the board runs."""
        payload = self.request(P.encode(P.INFO), "INFO", P.INFO_REPLY)
        self.model = self._parse(P.parse_info, payload, "INFO")
        return self.model

    def classify(self, codes):
        """``(class_index, logits)`` the board computes for input ``codes`` (raster order)."""
        model = self.model or self.info()
        frame = P.classify_frame(codes, model.input_bits)
        payload = self.request(frame, "CLASSIFY", P.RESULT)
        return self._parse(lambda p: P.parse_result(p, model.num_classes), payload, "CLASSIFY")


# --- images ---------------------------------------------------------------------------

@dataclass
class Image:
    source: str  # the file
    index: int  # within it
    pixels: np.ndarray  # (C, H, W): uint8 0..255, or float32 in [0, 1]
    grey: np.ndarray = None  # (1, H, W): a colour picture's luma, for a 1-channel network

    def for_channels(self, channels):
        """The pixels for a network of ``channels`` inputs: a colour picture's luma (as PIL
        converts it) for a 1-channel network, else the pixels as they are."""
        return self.grey if channels == 1 and self.grey is not None else self.pixels

    @property
    def label(self):
        return f"{self.source}[{self.index}]"


def _is_idx(path):
    name = path.name.lower()
    return name.endswith(("idx3-ubyte", "idx3-ubyte.gz"))


def _read_picture(path):
    """A PNG/PGM file as ``(pixels, grey)``: ``(1, H, W)`` and ``None`` for a grey picture,
    ``(3, H, W)`` RGB and its ``(1, H, W)`` luma for a colour one (uint8)."""
    from PIL import Image as PILImage

    with PILImage.open(path) as picture:
        grey = np.asarray(picture.convert("L"), dtype=np.uint8)[None]
        if picture.mode in ("1", "L", "LA", "I", "I;16", "F"):
            return grey, None
        return np.asarray(picture.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1), grey


def read_images(path):
    """The images of one file as ``(array, grey)``: an ``(N, C, H, W)`` array of uint8 pixels or
    float32 in [0, 1], and for a colour picture its luma ``(1, 1, H, W)`` (else ``None``)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"image file {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        try:
            pixels, grey = _read_picture(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read image {path} ({exc}); give a valid PNG or PGM file") from None
        return pixels[None], None if grey is None else grey[None]
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {path} as a numpy array ({exc}); save it with numpy.save") from None
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[0] == 0:
            raise UserError(f"{path} holds an array of shape {array.shape}; give (C, H, W) or (N, C, H, W) images")
        if array.dtype == np.uint8:
            return array, None
        if array.dtype.kind != "f":
            raise UserError(f"{path} holds {array.dtype} values; give uint8 pixels 0..255 or floats in [0, 1]")
        array = array.astype(np.float32)
        if not np.all((array >= 0) & (array <= 1)):  # NaN fails too
            raise UserError(f"{path} holds floats outside [0, 1]; scale the images to [0, 1] or save uint8 pixels")
        return array, None
    if _is_idx(path):
        from quant.data import read_idx

        pixels = read_idx(path)
        if pixels.ndim != 3:
            raise UserError(f"{path} holds IDX data of shape {pixels.shape}, not (N, H, W) images; "
                            f"give an image file (*-idx3-ubyte)")
        return pixels[:, None], None
    raise UserError(f"{path}: unknown image file type; give .png, .pgm, .npy or an IDX image file (*-idx3-ubyte)")


def load_images(paths, limit=None):
    """Every image of ``paths``, in order, at most ``limit`` in all."""
    images = []
    for path in paths:
        if limit is not None and len(images) >= limit:
            break
        array, grey = read_images(path)
        take = len(array) if limit is None else min(len(array), limit - len(images))
        images += [Image(str(path), i, array[i], None if grey is None else grey[i]) for i in range(take)]
    return images


def quantize(pixels, bits):
    """Input codes of ``pixels`` exactly as :func:`quant.quantizers.quantize_input` makes them:
    ``x = pixel / 255`` in float32 for uint8 pixels (floats are taken as ``x``), then
    ``clamp(floor(x * 2**bits + 0.5), 0, 2**bits - 1)``, all in float32."""
    if pixels.dtype == np.uint8:
        x = pixels.astype(np.float32) / np.float32(255)
    else:
        x = np.asarray(pixels, dtype=np.float32)
    codes = np.floor(x * np.float32(2.0**bits) + np.float32(0.5))
    return np.clip(codes, 0, 2**bits - 1).astype(np.int64)


def raster(codes):
    """``(C, H, W)`` codes in the order the board takes them: ``(y, x, c)``, channel fastest."""
    return codes.transpose(1, 2, 0).reshape(-1)


# --- the run ----------------------------------------------------------------------------

def _shape(shape):
    return "x".join(str(v) for v in shape)


def check_model(info, images, network=None, artifact=None):
    """One-line :class:`UserError` unless the images (and the artifact's network) fit the board's."""
    if network is not None:
        ours = (tuple(network.input_shape), network.input_bits, network.num_classes)
        theirs = (tuple(info.input_shape), info.input_bits, info.num_classes)
        if ours != theirs:
            raise UserError(f"the board runs a {_shape(theirs[0])} {theirs[1]}-bit input, {theirs[2]}-class network, "
                            f"but {artifact} is {_shape(ours[0])} {ours[1]}-bit, {ours[2]}-class; program the board "
                            f"with that artifact's bitstream or pass the matching --artifact")
    for image in images:
        pixels = image.for_channels(info.input_shape[0])
        if tuple(pixels.shape) != tuple(info.input_shape):
            c, h, w = info.input_shape
            raise UserError(f"{image.label} is {_shape(pixels.shape)} (C x H x W) but the board's network takes "
                            f"{_shape(info.input_shape)}; give {c}-channel {h}x{w} images (resize them first)")


def _classify_with_retry(board, image, codes, err):
    for attempt in (1, 2):
        try:
            return board.classify(codes)
        except (BoardError, GarbledReply) as exc:
            if attempt == 2:
                raise LinkError(f"{image.label}: {exc} (also on the retry)") from None
            print(f"warning: {image.label}: {exc}; sending it again", file=err)


def run(board, images, network=None, *, artifact=None, out=None, err=None):
    """Ask ``board`` for its model, classify ``images`` and print the answers; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    info = board.info()
    print(f"board: input {_shape(info.input_shape)} at {info.input_bits} bits, {info.num_classes} classes, "
          f"{info.logit_bits}-bit logits, model id 0x{info.model_id:08x}", file=out)
    check_model(info, images, network, artifact)
    equal = 0
    start = time.monotonic()
    for image in images:
        codes = quantize(image.for_channels(info.input_shape[0]), info.input_bits)
        cls, logits = _classify_with_retry(board, image, raster(codes), err)
        line = f"{image.label}: class {cls}  logits [{', '.join(str(v) for v in logits)}]"
        if network is not None:
            from core.reference import predict

            ref_classes, ref_logits = predict(network, codes[None])
            ref = [int(v) for v in ref_logits[0]]
            if ref == logits and int(ref_classes[0]) == cls:
                equal += 1
                line += "  reference: equal"
            else:
                line += f"  reference: DIFFERENT (class {int(ref_classes[0])}  logits [{', '.join(map(str, ref))}])"
        print(line, file=out, flush=True)
    seconds = time.monotonic() - start
    rate = f", {len(images) / seconds:.1f} images/s over the link" if seconds > 0 else ""
    summary = f"{len(images)} images in {seconds:.2f} s{rate}"
    if network is not None:
        summary += f"; {equal} of {len(images)} equal the integer reference"
    print(summary, file=out)
    return 0 if network is None or equal == len(images) else 1


def open_port(port, baud):
    """The serial port (pyserial: a device path or a URL such as ``socket://host:port``)."""
    try:
        import serial
    except ImportError:
        raise UserError("pyserial is not installed; run `make setup`") from None
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=READ_WAIT)
    except (serial.SerialException, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot open serial port {port} ({reason}); check --port (e.g. /dev/ttyUSB1) and that the "
                        f"board is plugged in") from None


@cli_main
def main(argv=None):
    parser = make_parser("python -m fpga.run", __doc__.splitlines()[0],
                         epilog="example: python -m fpga.run --port /dev/ttyUSB1 --artifact runs/demo-pow2/artifact.npz "
                                "digit.png t10k-images-idx3-ubyte --limit 100")
    parser.add_argument("images", nargs="+", metavar="IMAGES",
                        help=".png/.pgm images, .npy arrays (C,H,W) or (N,C,H,W), IDX image files (*-idx3-ubyte)")
    parser.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB1")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD, help=f"UART rate (default {DEFAULT_BAUD})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds to wait for each reply (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--artifact", help="the exported model (artifact.npz): check the board runs it and compare "
                                           "every answer with the integer reference")
    parser.add_argument("--limit", type=int, help="classify at most this many images in all")
    args = parser.parse_args(argv)
    if args.baud <= 0:
        raise UserError(f"--baud must be positive, not {args.baud}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be positive seconds, not {args.timeout}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, not {args.limit}")
    images = load_images(args.images, args.limit)  # bad files fail before the port is touched
    network = None
    if args.artifact:
        from core.artifact import load_artifact

        network = load_artifact(args.artifact).network
    port = open_port(args.port, args.baud)
    try:
        return run(Board(port, timeout=args.timeout), images, network, artifact=args.artifact)
    finally:
        port.close()


if __name__ == "__main__":
    sys.exit(main())
