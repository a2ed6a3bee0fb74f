"""Datasets: the registry of known datasets, user data specs, and ``load_split`` (see docs/data.md).

>>> from soi.data import load_split
>>> train = load_split("sst2", "train", n=1000, seed=13)      # doctest: +SKIP
>>> train.table.column_names                                  # doctest: +SKIP
['id', 'text', 'text_pair', 'label', 'gold', 'language', 'source', 'parallel_id', 'orig_id']
>>> examples = train.to_examples_table()                      # doctest: +SKIP
"""

from soi.data._canon import CLASSIFICATION_SCHEMA, GENERATIVE_SCHEMA
from soi.data.hub import HubDataset
from soi.data.loaders import DataSource, as_spec, load_derived_split, load_local_split, load_split
from soi.data.registry import (
    DATA_DIR_ENV,
    REGISTRY,
    DatasetEntry,
    HubSource,
    dataset_dir,
    dataset_names,
    get_entry,
    read_info,
    registry_table,
    resolve_data_dir,
)
from soi.data.split import (
    Split,
    common_parallel_ids,
    hf_dataset,
    run_tasks,
    subsample_indices,
    to_examples_table,
)
from soi.data.translit import DERIVED, romanize_persian
from soi.data.user import DataSpec, infer_labels

__all__ = [
    "CLASSIFICATION_SCHEMA",
    "DATA_DIR_ENV",
    "DERIVED",
    "GENERATIVE_SCHEMA",
    "REGISTRY",
    "DataSource",
    "DataSpec",
    "DatasetEntry",
    "HubDataset",
    "HubSource",
    "Split",
    "as_spec",
    "common_parallel_ids",
    "dataset_dir",
    "dataset_names",
    "get_entry",
    "hf_dataset",
    "infer_labels",
    "load_derived_split",
    "load_local_split",
    "load_split",
    "read_info",
    "registry_table",
    "resolve_data_dir",
    "romanize_persian",
    "run_tasks",
    "subsample_indices",
    "to_examples_table",
]
