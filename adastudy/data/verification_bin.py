"""insightface's verification sets (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`), read without MXNet.

    images, issame = load_bin("faces_emore/lfw.bin")
    # pair i compares images[2 * i] with images[2 * i + 1]; issame[i] says whether
    # they show the same person

A `.bin` is a pickle of `(bins, issame_list)`: `bins` holds 2P encoded images (JPEG or
PNG), `issame_list` P booleans. insightface wrote them with Python 2, so its `str`
images are read back as `bytes` (`encoding="bytes"`); re-pickled copies hold `bytes`,
`bytearray` or 1-D uint8 numpy arrays instead, and all of these are accepted.

Unpickling can run code chosen by whoever wrote the file. Only load `.bin` files the
user names. As a second line of defence the unpickler here resolves only the few globals
such a file needs (numpy's array and scalar reconstructors, `_codecs.encode` for bytes
pickled by Python 3, `bytes`, `bytearray`); any other global is refused before it runs.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np

from adastudy.data.base import DataError

__all__ = ["load_bin"]

# What a verification .bin may reference: numpy arrays and scalars (pickled by numpy 1.x
# as numpy.core.*, by numpy 2.x as numpy._core.*, at protocol 5 through _frombuffer),
# and bytes / bytearray as Python 3 pickles them at protocols 0-2.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
    }
)


class _RefusedGlobal(pickle.UnpicklingError):
    """A global outside `_ALLOWED_GLOBALS`: the file is not a plain verification set."""


class _BinUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a verification `.bin` needs."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        with warnings.catch_warnings():
            # numpy 2 reaches numpy.core.* (numpy 1.x pickles) through a deprecated alias.
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _image_bytes(item: object, index: int, path: Path) -> bytes:
    """Image `index` of `bins` as bytes: bytes, a bytearray or a 1-D uint8 array."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    if isinstance(item, np.ndarray):
        found = f"a {item.dtype} array of shape {item.shape}"
    else:
        found = f"a {type(item).__name__}"
    raise DataError(f"{path}: image {index} is {found}, not encoded image bytes")


def _issame(values: list[object] | tuple[object, ...] | np.ndarray, path: Path) -> np.ndarray:
    """`issame_list` as a bool array; each value must be a bool (or 0 / 1)."""
    if isinstance(values, np.ndarray) and values.dtype == np.bool_ and values.ndim == 1:
        return values.copy()
    flags = []
    for index, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, (int, np.integer)) and value in (0, 1)
        ):
            flags.append(bool(value))
        else:
            raise DataError(f"{path}: issame {index} is {value!r}, not a boolean")
    return np.asarray(flags, dtype=bool)


def load_bin(path: str | os.PathLike[str]) -> tuple[list[bytes], np.ndarray]:
    """(images, issame) of the verification `.bin` at `path`: the 2P encoded images as
    bytes, in file order, and a bool array of the P pair labels.

    Unpickling runs code (see the module docstring): only pass files the user names.
    Raises `DataError`, one line naming the file: a missing file, a file that is not a
    pickle or refers to other globals, a pickle that is not `(bins, issame_list)`, an
    image that is not bytes, an odd number of images, and `len(bins) != 2 * len(issame)`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such verification file")
    try:
        with open(path, "rb") as handle:
            loaded = _BinUnpickler(handle, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise DataError(
            f"{path}: not a verification .bin: it refers to {exc}, which such a file "
            "never needs (refused, not run)"
        ) from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    # A damaged or foreign file can make the unpickler fail in almost any way
    # (UnpicklingError, EOFError, ValueError, TypeError, ...): all mean "not a pickle".
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: not a verification .bin (cannot unpickle: {reason})") from exc
    if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
        raise DataError(
            f"{path}: not a verification .bin: expected a pickled (bins, issame_list) "
            f"pair, found {_describe(loaded)}"
        )
    bins, issame_list = loaded
    if not isinstance(bins, (list, tuple)):
        raise DataError(f"{path}: bins is {_describe(bins)}, expected a list of images")
    if not isinstance(issame_list, (list, tuple, np.ndarray)):
        raise DataError(
            f"{path}: issame_list is {_describe(issame_list)}, expected a list of booleans"
        )
    images = [_image_bytes(item, index, path) for index, item in enumerate(bins)]
    issame = _issame(issame_list, path)
    if len(images) % 2:
        raise DataError(f"{path}: an odd number of images ({len(images)}): pairs need 2 each")
    if len(images) != 2 * len(issame):
        raise DataError(
            f"{path}: {len(images)} images for {len(issame)} pairs: expected "
            f"{2 * len(issame)} (2 per pair)"
        )
    return images, issame


def _describe(value: object) -> str:
    """A short name for what a pickle held: 'a dict', 'a tuple of 3'."""
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
