"""The host client against a board written in Python with core.protocol: INFO, CLASSIFY, the
retry after an ERROR or a garbled reply, the comparison with the integer reference, and the
command line's refusals (missing file, wrong size, bad port), each one line and a non-zero exit."""

import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from core import protocol as P
from core import reference
from core.artifact import Artifact, Golden, Layer, Network, save_artifact
from fpga import run as client
from hw.random_layers import random_layer
from quant.quantizers import quantize_input

SHAPE = (1, 4, 4)
BITS = 4


class FakeBoard:
    """The board side of the link: answers each frame written to it as hw.link does.

    ``logits(codes)`` gives the logits of an image's codes (raster order); the replies
    whose numbers are in ``garble`` get a bit flipped, those in ``errors`` become ERROR
    frames (bad checksum), and a ``silent`` board never answers.
    """

    def __init__(self, info, logits, *, garble=(), errors=(), silent=False):
        self.info, self.logits = info, logits
        self.garble, self.errors, self.silent = set(garble), set(errors), silent
        self.decoder = P.FrameDecoder()
        self.out = bytearray()
        self.replies = 0
        self.received = []  # the codes of every CLASSIFY
        self.closed = False

    def answer(self, frame):
        n = self.info.n_inputs
        if not frame.crc_ok:
            return P.encode(P.ERROR, bytes([P.BAD_CHECKSUM]))
        if frame.type == P.INFO:
            return P.encode(P.INFO_REPLY, self.info.payload()) if not frame.payload else \
                P.encode(P.ERROR, bytes([P.BAD_LENGTH]))
        if frame.type != P.CLASSIFY:
            return P.encode(P.ERROR, bytes([P.UNKNOWN_TYPE]))
        if len(frame.payload) != n:
            return P.encode(P.ERROR, bytes([P.BAD_LENGTH]))
        codes = list(frame.payload)
        if max(codes) >= 2**self.info.input_bits:
            return P.encode(P.ERROR, bytes([P.BAD_CODE]))
        self.received.append(codes)
        logits = [int(v) for v in self.logits(codes)]
        return P.encode(P.RESULT, P.result_payload(int(np.argmax(logits)), logits))

    def write(self, data):
        for frame in self.decoder.feed(data):
            reply = self.answer(frame)
            number, self.replies = self.replies, self.replies + 1
            if self.silent:
                continue
            if number in self.errors:
                reply = P.encode(P.ERROR, bytes([P.BAD_CHECKSUM]))
            if number in self.garble:
                reply = bytearray(reply)
                reply[-2] ^= 0x20
            self.out += reply
        return len(data)

    def read(self, n):
        chunk = bytes(self.out[:n])
        del self.out[:n]
        return chunk

    def close(self):
        self.closed = True


def sum_logits(codes):
    """A stand-in network: class ``sum(codes) % 3`` wins, logits can be negative."""
    logits = [-5, -5, -5]
    logits[sum(codes) % 3] = sum(codes)
    return logits


def info(shape=SHAPE, bits=BITS, classes=3):
    return P.ModelInfo(shape, bits, classes, 16, 0x1234ABCD)


@pytest.fixture
def artifact(tmp_path):
    """A tiny exported model: flatten 1x4x4 -> linear 16 -> 3 logits."""
    rng = np.random.default_rng(5)
    flat = Layer(kind="flatten", name="flat", in_shape=SHAPE, out_shape=(16,))
    logits = random_layer(rng, kind="linear", in_c=16, out_c=3, abits=BITS, wbits=4, terms=1, relu=False,
                          name="logits")
    logits.in_exp = BITS
    logits.arrays["exp"] = logits.in_exp - logits.arrays["requant"] - logits.out_exp
    net = Network(input_shape=SHAPE, input_bits=BITS, layers=[flat, logits], num_classes=3)
    inputs = rng.integers(0, 2**BITS, (2,) + SHAPE)
    art = Artifact(network=net, golden=Golden(inputs=inputs, outputs=reference.run(net, inputs),
                                              labels=np.zeros(2, np.int64)), meta={})
    path = tmp_path / "artifact.npz"
    save_artifact(path, art)
    return path, net


@pytest.fixture
def images(tmp_path):
    """A PNG, a .npy batch of floats and an IDX file, all 1x4x4, with their pixels as x in [0, 1]."""
    rng = np.random.default_rng(9)
    png = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    PILImage.fromarray(png, mode="L").save(tmp_path / "digit.png")
    floats = rng.random((2, 1, 4, 4), dtype=np.float32)
    np.save(tmp_path / "batch.npy", floats)
    idx = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in idx.shape)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header + idx.tobytes())
    xs = [png[None] / np.float32(255)] + list(floats) + [im[None] / np.float32(255) for im in idx]
    files = [tmp_path / "digit.png", tmp_path / "batch.npy", tmp_path / "t10k-images-idx3-ubyte"]
    return files, [torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in xs]


def cli(argv, board, monkeypatch):
    """Run ``main(argv)`` with ``board`` as the serial port; returns the exit status."""
    opened = []

    def fake_open(port, baud):
        opened.append((port, baud))
        return board

    monkeypatch.setattr(client, "open_port", fake_open)
    try:
        status = client.main(["--port", "/dev/ttyFAKE", "--timeout", "0.3", *map(str, argv)])
    except SystemExit as exc:
        status = exc.code
    assert not opened or board.closed
    return status


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err
    return err


# --- Board --------------------------------------------------------------------------------

def test_board_info_and_classify():
    fake = FakeBoard(info(), sum_logits)
    board = client.Board(fake, timeout=0.5)
    assert board.info() == info()
    cls, logits = board.classify([1] * 16)
    assert (cls, logits) == (1, [-5, 16, -5])
    assert fake.received == [[1] * 16]
    with pytest.raises(ValueError):
        board.classify([16] * 16)  # not a 4-bit code: refused before it is sent


def test_board_errors():
    with pytest.raises(client.ReplyTimeout, match="no reply"):
        client.Board(FakeBoard(info(), sum_logits, silent=True), timeout=0.1).info()
    with pytest.raises(client.GarbledReply, match="CRC"):
        client.Board(FakeBoard(info(), sum_logits, garble={0}), timeout=0.5).info()
    board = client.Board(FakeBoard(info(), sum_logits), timeout=0.5)
    board.info()
    with pytest.raises(client.BoardError, match="bad length") as exc:
        board.request(P.encode(P.CLASSIFY, bytes(3)), "CLASSIFY", P.RESULT)
    assert exc.value.code == P.BAD_LENGTH
    with pytest.raises(client.LinkError, match="answered INFO_REPLY"):
        board.request(P.encode(P.INFO), "INFO", P.RESULT)


def test_quantize_matches_the_project_quantiser():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = torch.from_numpy(pixels).to(torch.float32) / 255  # as quant.data makes MNIST inputs
    floats = np.random.default_rng(0).random((2, 8, 8), dtype=np.float32)
    for bits in range(1, 9):
        assert np.array_equal(client.quantize(pixels, bits), quantize_input(x, bits).numpy())
        assert np.array_equal(client.quantize(floats, bits), quantize_input(torch.from_numpy(floats), bits).numpy())
    codes = np.arange(24).reshape(2, 3, 4)  # (C, H, W)
    assert list(client.raster(codes)[:4]) == [codes[0, 0, 0], codes[1, 0, 0], codes[0, 0, 1], codes[1, 0, 1]]


# --- the command line ---------------------------------------------------------------------

def test_cli_classifies_every_image(images, monkeypatch, capsys):
    files, xs = images
    fake = FakeBoard(info(), sum_logits)
    assert cli(files, fake, monkeypatch) == 0
    out = capsys.readouterr().out.splitlines()
    codes = [quantize_input(x, BITS).numpy().astype(int) for x in xs]
    assert fake.received == [list(c.transpose(1, 2, 0).ravel()) for c in codes]
    labels = [f"{files[0]}[0]", f"{files[1]}[0]", f"{files[1]}[1]"] + [f"{files[2]}[{i}]" for i in range(3)]
    assert out[0].startswith("board: input 1x4x4 at 4 bits, 3 classes") and "0x1234abcd" in out[0]
    for line, label, c in zip(out[1:], labels, codes):
        logits = sum_logits(list(c.ravel()))
        assert line == f"{label}: class {int(np.argmax(logits))}  logits [{', '.join(map(str, logits))}]"
    assert out[-1].startswith("6 images in ") and "images/s over the link" in out[-1]
    # --limit counts images across the files
    assert cli([*files, "--limit", "2"], FakeBoard(info(), sum_logits), monkeypatch) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 images in ")


def test_cli_compares_with_the_reference(images, artifact, monkeypatch, capsys):
    files, _ = images
    path, net = artifact

    def ref(codes):
        return reference.predict(net, np.array(codes).reshape((1, 4, 4, 1)).transpose(0, 3, 1, 2))[1][0]

    assert cli([*files, "--artifact", path], FakeBoard(info(), ref), monkeypatch) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(line.endswith("reference: equal") for line in out[1:-1])
    assert out[-1].endswith("6 of 6 equal the integer reference")

    def wrong(codes):
        logits = list(ref(codes))
        logits[2] += 1
        return logits

    assert cli([files[0], "--artifact", path], FakeBoard(info(), wrong), monkeypatch) == 1
    out = capsys.readouterr().out
    assert "reference: DIFFERENT" in out and "0 of 1 equal" in out
    # a board that runs another network is refused
    assert cli([files[0], "--artifact", path], FakeBoard(info(classes=4), sum_logits), monkeypatch) == 2
    one_line_error(capsys, "4-class", "3-class", "--artifact")


def test_cli_retries_once(images, monkeypatch, capsys):
    files, _ = images
    # reply 0 is INFO_REPLY; reply 1 (the first image) comes garbled, reply 3 is an ERROR
    fake = FakeBoard(info(), sum_logits, garble={1}, errors={3})
    assert cli(files[:2], fake, monkeypatch) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and "CRC" in warnings[0] and "ERROR (bad checksum)" in warnings[1]
    assert all("sending it again" in w for w in warnings)
    assert len(captured.out.splitlines()) == 1 + 3 + 1 and len(fake.received) == 5
    # twice in a row for one image: an error
    assert cli(files[:1], FakeBoard(info(), sum_logits, errors={1, 2}), monkeypatch) == 2
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: ") and error.startswith("error: ")
    assert "digit.png[0]: the board answered ERROR (bad checksum)" in error and "also on the retry" in error


def test_cli_refusals(images, tmp_path, monkeypatch, capsys):
    files, _ = images
    board = FakeBoard(info(), sum_logits)
    assert cli([tmp_path / "missing.png"], board, monkeypatch) == 2
    one_line_error(capsys, "missing.png", "does not exist")
    PILImage.fromarray(np.zeros((5, 4), np.uint8), mode="L").save(tmp_path / "big.png")
    assert cli([files[0], tmp_path / "big.png"], board, monkeypatch) == 2
    one_line_error(capsys, "big.png[0] is 1x5x4", "takes 1x4x4")
    np.save(tmp_path / "bad.npy", np.full((1, 4, 4), 2.0))
    assert cli([tmp_path / "bad.npy"], board, monkeypatch) == 2
    one_line_error(capsys, "outside [0, 1]")
    (tmp_path / "notes.txt").write_text("x")
    assert cli([tmp_path / "notes.txt"], board, monkeypatch) == 2
    one_line_error(capsys, "unknown image file type")
    assert cli([files[0]], FakeBoard(info(), sum_logits, silent=True), monkeypatch) == 2
    one_line_error(capsys, "no reply", "--timeout")
    assert cli([files[0], "--limit", "0"], board, monkeypatch) == 2
    one_line_error(capsys, "--limit")


def test_cli_bad_port(images, capsys):
    files, _ = images
    with pytest.raises(SystemExit) as exc:
        client.main(["--port", "/nonexistent/ttyUSB9", str(files[0])])
    assert exc.value.code == 2
    one_line_error(capsys, "cannot open serial port /nonexistent/ttyUSB9", "--port")
    with pytest.raises(SystemExit) as exc:
        client.main([str(files[0])])  # no --port
    assert exc.value.code == 2
    one_line_error(capsys, "--port")


def test_cli_over_serial_ports(images, capsys):
    """The real port path: pyserial's loopback URL echoes our own INFO (refused as the wrong
    reply), and a pseudo-terminal with the fake board behind it classifies."""
    files, _ = images
    with pytest.raises(SystemExit) as exc:
        client.main(["--port", "loop://", "--timeout", "0.5", str(files[0])])
    assert exc.value.code == 2
    one_line_error(capsys, "answered INFO to INFO")

    master, slave = os.openpty()
    fake = FakeBoard(info(), sum_logits)

    def serve():
        try:
            while True:
                fake.write(os.read(master, 4096))
                while fake.out:
                    os.write(master, fake.read(4096))
        except OSError:  # the test closed the terminal
            pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        status = client.main(["--port", os.ttyname(slave), "--timeout", "2", str(files[0]), str(files[1])])
    finally:
        os.close(slave)  # with every slave descriptor closed, the server's read fails and it ends
        server.join(timeout=5)
        os.close(master)
    assert not server.is_alive()
    assert status == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and out[-1].startswith("3 images in ")
    assert len(fake.received) == 3


def test_colour_pictures_fit_either_network(tmp_path):
    """A colour PNG is RGB for a 3-channel network and its luma (as PIL converts it) for a
    1-channel one; a grey PNG has one channel."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    PILImage.fromarray(rgb.transpose(1, 2, 0), mode="RGB").save(tmp_path / "colour.png")
    PILImage.fromarray(rgb[0], mode="L").save(tmp_path / "grey.png")
    colour, grey = client.load_images([tmp_path / "colour.png", tmp_path / "grey.png"])
    assert np.array_equal(colour.for_channels(3), rgb)
    luma = np.asarray(PILImage.fromarray(rgb.transpose(1, 2, 0), mode="RGB").convert("L"))
    assert np.array_equal(colour.for_channels(1), luma[None])
    assert np.array_equal(grey.for_channels(1), rgb[:1]) and grey.for_channels(3).shape == (1, 4, 5)
