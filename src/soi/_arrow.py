"""Arrow -> NumPy without pyarrow's pandas bridge.

``Array.to_numpy`` goes through Arrow's pandas conversion layer, which imports pandas (~0.2 s) the first
time. For fixed-width columns without nulls a NumPy view of the data buffer is exact and free; anything
else (strings, nulls, nested) falls back to ``to_numpy``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """NumPy array of a column (a zero-copy view for fixed-width numeric columns without nulls)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    t = col.type
    if col.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t)) and not pa.types.is_float16(t):
        dtype = np.dtype(t.to_pandas_dtype())
        return np.frombuffer(col.buffers()[1], dtype=dtype, count=len(col), offset=col.offset * dtype.itemsize)
    if col.null_count == 0 and pa.types.is_boolean(t):
        bits = np.frombuffer(col.buffers()[1], dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little", count=col.offset + len(col))[col.offset:].astype(bool)
    return col.to_numpy(zero_copy_only=False)


def first_duplicate(values: pa.Array | pa.ChunkedArray) -> object | None:
    """A value occurring more than once (None when all are distinct); hashes once when there is none."""
    if len(pc.unique(values)) == len(values):
        return None
    counts = pc.value_counts(values)
    return counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
