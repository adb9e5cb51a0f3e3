"""Classification outputs: top-k ``"value:index[:label]"`` strings, as Triton builds them."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import InvalidArgument
from .tensors import wire_datatype_of


def _format_value(value) -> str:
    # std::to_string: six decimals for floating point, plain digits for integers.
    if isinstance(value, (float, np.floating)):
        return f"{float(value):f}"
    return str(int(value))


def classify(array: np.ndarray, k: int, batch: int, labels: Optional[Sequence[str]]) -> np.ndarray:
    """Top-``k`` classes per batch item (per request when ``batch`` is 0), as an object array.

    ``k`` beyond the number of classes is clamped, as in Triton.
    """
    if array.dtype == np.float16 or array.dtype.kind not in "fiu":
        raise InvalidArgument("class result not available for output due to unsupported type "
                              f"'{wire_datatype_of(array.dtype)}'")
    rows = array.reshape(batch, -1) if batch else array.reshape(1, -1)
    take = min(k, rows.shape[1])
    out = np.empty((rows.shape[0], take), dtype=object)
    for r, row in enumerate(rows):
        # Stable sort on the negated values keeps the lower index first on ties.
        order = np.argsort(-row.astype(np.float64), kind="stable")[:take]
        for c, index in enumerate(order):
            text = f"{_format_value(row[index])}:{index}"
            if labels is not None and index < len(labels):
                text += f":{labels[index]}"
            out[r, c] = text.encode()
    return out if batch else out.reshape(take)
