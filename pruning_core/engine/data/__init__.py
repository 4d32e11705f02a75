"""Datasets: where images come from, and how they are batched for pruning and training.

- `dataset`: `Dataset`, a whole dataset held in memory as uint8 tensors and batched (normalised, augmented) on
  its device; `DatasetSpec`, what a dataset is before it is loaded.
- `loaders`: reading the embedded digits, synthetic noise, torchvision datasets, image folders and Tiny
  ImageNet; only the torchvision ones ever touch the network, and only with `download=True`.
- `registry`: `DATASETS`, the registered datasets with their defaults, and `load_dataset`.
- `cache`: loaded datasets kept in memory (`clear_cache`).
"""

from pruning_core.engine.data.cache import clear_cache
from pruning_core.engine.data.dataset import (DATA_DIR_ENV, SPLITS, TRAIN_DEFAULT_KEYS, Dataset, DatasetSpec,
                                              DatasetUnavailableError, crop_and_flip, data_root)
from pruning_core.engine.data.loaders import IMAGE_EXTENSIONS, OFFLINE_ADVICE
from pruning_core.engine.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS", "DATA_DIR_ENV", "IMAGE_EXTENSIONS", "OFFLINE_ADVICE", "SPLITS", "TRAIN_DEFAULT_KEYS", "Dataset",
    "DatasetSpec", "DatasetUnavailableError", "clear_cache", "crop_and_flip", "data_root", "load_dataset",
]
