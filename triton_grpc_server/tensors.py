"""Datatype tables, BYTES packing and tensor-shape helpers.

Three names exist for each type: the wire datatype ("FP32"), the config enum
(``TYPE_FP32``, with ``TYPE_STRING`` for BYTES) and a numpy dtype. BF16 has no
numpy dtype; its raw bytes travel as ``uint16`` (the upper half of an FP32).
"""
from __future__ import annotations

import struct
from typing import Iterable, Sequence

import numpy as np

from .errors import InvalidArgument

# wire datatype -> numpy dtype (little-endian; BYTES is an object array of bytes)
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
    "BYTES": np.dtype(object),
}

# config data_type enum name -> wire datatype
CONFIG_TO_WIRE: dict[str, str] = {
    "TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32", "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16", "TYPE_INT32": "INT32", "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES", "TYPE_BF16": "BF16",
}
WIRE_TO_CONFIG: dict[str, str] = {v: k for k, v in CONFIG_TO_WIRE.items()}

# numpy dtype kind/size -> wire datatype, for backends that report numpy types
_NUMPY_TO_WIRE = {np.dtype(dt): name for name, dt in NUMPY_DTYPES.items()
                  if name not in ("BF16", "BYTES")}

def wire_datatype_of(dtype) -> str:
    """The wire datatype for a numpy dtype (object/str/bytes arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    name = _NUMPY_TO_WIRE.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if name is None:
        raise InvalidArgument(f"unsupported numpy datatype {dtype}")
    return name


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def shape_str(shape: Iterable[int]) -> str:
    """Shapes as Triton prints them in error texts: ``[1,16]``."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def serialize_bytes(array: np.ndarray) -> bytes:
    """Pack an array of str/bytes into Triton's BYTES layout, in C order."""
    parts = []
    pack = struct.Struct("<I").pack
    for item in np.asarray(array, dtype=object).ravel(order="C"):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray)):
            item = str(item).encode("utf-8")
        parts.append(pack(len(item)))
        parts.append(bytes(item))
    return b"".join(parts)
