"""Pure-Python reader for dlib's serialized DNNs (``.dat`` files written by ``dlib::serialize(net)``).

No compiler and no dlib needed: numpy decodes the stream. The format, from dlib's
``serialize.h``, ``dnn/core.h``, ``dnn/tensor.h``, ``dnn/layers.h`` and ``dnn/input.h``:

* integers are variable length: one control byte (low 4 bits = number of bytes
  that follow, bit 7 = negative) then the magnitude, little-endian;
* floats/doubles are a (mantissa int64, exponent int16) pair of such integers,
  value = mantissa * 2**exponent, with exponents 32000/32001/32002 meaning
  +inf/-inf/nan;
* bools are the ASCII bytes ``'0'``/``'1'``; strings are a length then raw bytes;
* a tensor is ``version(2), num_samples, k, nr, nc`` then raw little-endian
  float32 data (version 1, from old dlib, stores each element as a dlib float);
* a network is written outside-in: each wrapper writes its version and then its
  whole subnetwork, and a layer's own details (a string tag such as ``"con_4"``
  and its parameters) come *after* its subnetwork. So the file holds the loss
  layer, then a run of version numbers down to the input layer, then the
  layers' details from the input end to the output end.

:func:`read_dlib_net` returns the layers in forward (input to output) order.
Tag and skip layers carry no type in the stream; they appear as ``"tag_or_skip"``
markers, and the topology (which tag a skip or add_prev refers to) must come
from the network's C++ definition. ``repeat`` layers are not supported.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from facesearch.core.errors import FacesearchError

# dlib's float_details markers for non-finite values.
_IS_INF, _IS_NINF, _IS_NAN = 32000, 32001, 32002
_NAME = re.compile(rb"[a-z][a-z0-9_]{3,63}")


class DlibFormatError(FacesearchError):
    """The bytes are not a dlib DNN serialization this reader understands."""


@dataclass
class DlibLayer:
    """One layer of a dlib network.

    ``kind`` is the details tag without its version suffix (``"con"``, ``"affine"``,
    ``"relu"``, ``"fc"``, ``"max_pool"``, ``"avg_pool"``, ``"add_prev"``, ...), or
    ``"tag_or_skip"`` for the structural wrappers. ``version`` is the raw tag
    (``"con_4"``). ``params`` holds numpy float32 arrays in dlib's own shapes.
    """

    kind: str
    version: str = ""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed network: input layer, layers in forward order, loss layer."""

    input: DlibLayer
    layers: list[DlibLayer]
    loss: DlibLayer | None = None

    def parameter_tensors(self) -> list[np.ndarray]:
        """All parameter arrays in forward order (e.g. conv filters, conv bias, gamma, beta, ...)."""
        return [p for layer in self.layers for p in layer.params.values()]


class DatStream:
    """Decodes dlib's primitive serialization from an in-memory buffer."""

    def __init__(self, data: bytes | memoryview):
        self.buf = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise DlibFormatError(f"unexpected end of dlib data at byte {self.pos}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def read_int(self, signed: bool = True) -> int:
        """A variable-length integer (dlib ``pack_int``/``unpack_int``)."""
        ctrl = self._take(1)[0]
        size, negative = ctrl & 0x0F, bool(ctrl & 0x80)
        if size > 8 or ctrl & 0x70 or (negative and not signed):
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if negative else value

    def read_float(self) -> float:
        """A float/double stored as (mantissa, exponent) integers."""
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent == _IS_INF:
            return math.inf
        if exponent == _IS_NINF:
            return -math.inf
        if exponent == _IS_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def read_bool(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def read_string(self) -> str:
        n = self.read_int(signed=False)
        return bytes(self._take(n)).decode("latin-1")

    def peek_name(self) -> str | None:
        """The next item as a layer tag, if it looks like one; the position is unchanged.

        Version numbers (``01 01``, ``01 02``) decode as 1- or 2-byte strings, so a
        tag must be at least 4 identifier characters long to count.
        """
        start = self.pos
        try:
            n = self.read_int(signed=False)
            raw = bytes(self._take(n)) if 4 <= n <= 64 else b""
        except DlibFormatError:
            raw = b""
        finally:
            self.pos = start
        return raw.decode() if _NAME.fullmatch(raw) else None

    def read_tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.read_int()
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        if version == 2:
            data = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:
            data = np.array([self.read_float() for _ in range(count)], dtype=np.float32)
        else:
            raise DlibFormatError(f"unsupported tensor version {version}")
        return data.reshape(shape)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: only its shape is stored."""
        if self.read_int() != 1:
            raise DlibFormatError("unsupported alias_tensor version")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]


# --- layer details, keyed by the version tag dlib writes first -------------------------


def _split(params: np.ndarray, shapes: list[tuple[int, ...]], names: list[str]) -> dict[str, np.ndarray]:
    """Slice a flat params tensor into the alias-tensor views dlib keeps over it."""
    flat, out, offset = params.reshape(-1), {}, 0
    for name, shape in zip(names, shapes):
        n = int(np.prod(shape))
        if n:
            out[name] = flat[offset:offset + n].reshape(shape).copy()
        offset += n
    if offset != flat.size:
        raise DlibFormatError(f"parameter size {flat.size} does not match its views ({offset})")
    return out


def _read_multipliers(s: DatStream) -> dict[str, float]:
    """The training-only learning-rate and weight-decay multipliers of con_ and fc_ layers."""
    return {k: s.read_float() for k in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult")}


def _read_con(s: DatStream, tag: str) -> DlibLayer:
    params = s.read_tensor()
    keys = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    attrs: dict[str, Any] = {k: s.read_int() for k in keys}
    filt, bias = s.read_alias_tensor(), s.read_alias_tensor()
    attrs.update(_read_multipliers(s))
    return DlibLayer("con", tag, _split(params, [filt, bias], ["filters", "biases"]), attrs)


def _read_affine(s: DatStream, tag: str) -> DlibLayer:
    params = s.read_tensor()
    gamma, beta = s.read_alias_tensor(), s.read_alias_tensor()
    attrs: dict[str, Any] = {}
    # Old dlib wrote no mode; the add_layer's bools ('0'/'1') follow directly then.
    if bytes(s.buf[s.pos:s.pos + 1]) not in (b"0", b"1"):
        attrs["mode"] = "fc" if s.read_int() == 1 else "conv"
    return DlibLayer("affine", tag, _split(params, [gamma, beta], ["gamma", "beta"]), attrs)


def _read_fc(s: DatStream, tag: str) -> DlibLayer:
    attrs: dict[str, Any] = {"num_outputs": s.read_int(), "num_inputs": s.read_int()}
    params = s.read_tensor()
    weights, biases = s.read_alias_tensor(), s.read_alias_tensor()
    attrs["has_bias"] = s.read_int() == 0  # dlib: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    attrs.update(_read_multipliers(s))
    return DlibLayer("fc", tag, _split(params, [weights, biases], ["weights", "biases"]), attrs)


def _read_pool(s: DatStream, tag: str) -> DlibLayer:
    keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return DlibLayer(tag.rsplit("_", 1)[0], tag, attrs={k: s.read_int() for k in keys})


def _read_plain(s: DatStream, tag: str) -> DlibLayer:
    return DlibLayer(tag.rstrip("_"), tag)


def _read_input_rgb(s: DatStream, tag: str) -> DlibLayer:
    attrs: dict[str, Any] = {"avg_red": s.read_float(), "avg_green": s.read_float(), "avg_blue": s.read_float()}
    attrs.update(nr=s.read_int(), nc=s.read_int())
    return DlibLayer("input", tag, attrs=attrs)


def _read_loss_metric(s: DatStream, tag: str) -> DlibLayer:
    attrs = {"margin": s.read_float(), "dist_thresh": s.read_float()} if tag == "loss_metric_2" else {}
    return DlibLayer("loss_metric", tag, attrs=attrs)


_DETAILS: dict[str, Callable[[DatStream, str], DlibLayer]] = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "fc_2": _read_fc,
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "relu_": _read_plain,
    "add_prev_": _read_plain,
    "input_rgb_image_sized": _read_input_rgb,
    "loss_metric_": _read_loss_metric,
    "loss_metric_2": _read_loss_metric,
}


def _read_details(s: DatStream) -> DlibLayer:
    tag = s.read_string()
    reader = _DETAILS.get(tag)
    if reader is None:
        raise DlibFormatError(f"unsupported dlib layer {tag!r}", hint=f"supported: {', '.join(sorted(_DETAILS))}")
    return reader(s, tag)


def _read_layer_trailer(s: DatStream, layer: DlibLayer, version: int) -> None:
    """The add_layer bookkeeping after the details: 3 bools, then 3 (usually empty) tensors.

    Version 3 (only an add_layer right on the input) adds its sample expansion factor.
    """
    for name in ("setup_called", "gradient_input_is_stale", "output_disabled"):
        layer.attrs[name] = s.read_bool()
    for _ in range(3):
        s.read_tensor()
    if version == 3:
        layer.attrs["sample_expansion_factor"] = s.read_int(signed=False)


def parse_dlib_net(data: bytes | memoryview) -> DlibNet:
    """Parse a serialized dlib network (bytes) into its layers, input first."""
    s, loss, wrappers = DatStream(data), None, []  # wrappers: versions, outermost first
    while (name := s.peek_name()) is None or not name.startswith("input"):
        version = s.read_int()
        name = s.peek_name()
        if version == 1 and name is not None and name.startswith("loss"):
            loss = _read_details(s)  # add_loss_layer: version, loss details, subnet
        elif version in (1, 2, 3):
            wrappers.append(version)  # add_layer: 2 (3 right on the input); tag/skip: 1
        else:
            raise DlibFormatError(f"unexpected version {version} at byte {s.pos}")
    net = DlibNet(input=_read_details(s), layers=[], loss=loss)
    for i, version in enumerate(reversed(wrappers)):
        if version > 1:
            layer = _read_details(s)
            _read_layer_trailer(s, layer, version)
        else:
            layer = DlibLayer("tag_or_skip")
            if i == 0:  # a tag right on the input keeps copies of its input: 2 tensors + 1 bool
                s.read_tensor(), s.read_tensor(), s.read_bool()
        net.layers.append(layer)
    if s.pos != len(s.buf):
        raise DlibFormatError(f"{len(s.buf) - s.pos} trailing bytes after the network")
    return net


def read_dlib_net(path: str | os.PathLike) -> DlibNet:
    """Read a dlib DNN ``.dat`` file (e.g. ``dlib_face_recognition_resnet_model_v1.dat``)."""
    path = Path(path)
    if not path.is_file():
        raise FacesearchError(f"dlib model file not found: {path}")
    return parse_dlib_net(path.read_bytes())
