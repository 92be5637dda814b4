"""ImageFolder data for the vision recipe: class lists, transforms, datasets, samplers.

Layout (as ImageNet): ``DATA_DIR/train/<class>/<image>`` and ``DATA_DIR/val/<class>/<image>``.
Problems with the tree raise :class:`~blspeech.errors.UserError` naming the folder.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import Dataset, Sampler

from blspeech.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index starting at ``rank``: each sample on exactly one rank.

    Unlike :class:`DistributedSampler` it never pads with duplicates, so metrics summed
    over ranks count every validation image once.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _class_folder_dataset(root: str, classes: Sequence[str], transform: Any) -> Dataset:
    from torchvision import datasets

    class ClassFolder(datasets.ImageFolder):
        # A fixed class list, so val/ labels match train/ even if val/ lacks a class.
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            return list(classes), {c: i for i, c in enumerate(classes)}

    return ClassFolder(root, transform=transform, allow_empty=True)


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _short_list(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" ... (+{len(names) - n} more)" if len(names) > n else "")


def _split_dir(data_dir: str, split: str) -> str:
    if not os.path.isdir(data_dir):
        raise UserError(f"--data-dir {data_dir} does not exist or is not a directory")
    path = os.path.join(data_dir, split)
    if not os.path.isdir(path):
        raise UserError(f"--data-dir {data_dir} has no {split}/ folder "
                        f"(expected {split}/<class>/<image> as in ImageNet)")
    return path


def train_classes(data_dir: str) -> list[str]:
    """Sorted class-folder names of ``data_dir/train`` (raises :class:`UserError`)."""
    train_dir = _split_dir(data_dir, "train")
    classes = _subdirs(train_dir)
    if not classes:
        raise UserError(f"{train_dir} has no class folders (expected train/<class>/<image>)")
    return classes


def train_transform(size: int) -> Any:
    """RandomResizedCrop + horizontal flip + ImageNet normalisation."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def val_transform(size: int) -> Any:
    """Resize the short side to size*256/224, center-crop size, ImageNet normalisation."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def build_train_set(data_dir: str, classes: Sequence[str], size: int) -> Dataset:
    """Training ImageFolder; every class folder must hold at least one image."""
    ds = _class_folder_dataset(os.path.join(data_dir, "train"), classes, train_transform(size))
    counts = Counter(ds.targets)
    empty = [c for i, c in enumerate(classes) if counts[i] == 0]
    if empty:
        raise UserError(f"train/ class folder(s) without images: {_short_list(empty)}")
    return ds


def build_val_set(data_dir: str, classes: Sequence[str], size: int) -> Dataset:
    """Validation ImageFolder labelled with the training class list."""
    val_dir = _split_dir(data_dir, "val")
    unknown = sorted(set(_subdirs(val_dir)) - set(classes))
    if unknown:
        raise UserError(f"val/ has class folder(s) that the model does not know: "
                        f"{_short_list(unknown)}")
    ds = _class_folder_dataset(val_dir, classes, val_transform(size))
    if len(ds) == 0:
        raise UserError(f"{val_dir} holds no images (expected val/<class>/<image>)")
    return ds
