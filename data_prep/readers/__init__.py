"""Source readers: one module per upstream schema, registered by its `type` name.

Each reader module exposes TYPE, DEFAULT_SPLIT, OPTIONS (its extra recipe keys with their
defaults), required_columns(source) and make_converter(source) -> convert(row) -> Pair,
raising Reject(reason) for rows it drops. `iter_records` (in files.py) does the I/O.
"""

from __future__ import annotations

from basealign.data_prep.readers import hh_rlhf, pairs, pku_saferlhf, ultrafeedback
from basealign.data_prep.readers.base import Pair, Reject

READERS = {module.TYPE: module for module in (hh_rlhf, pku_saferlhf, ultrafeedback, pairs)}

__all__ = ["READERS", "Pair", "Reject"]
