"""Compact fingerprints of FITS products, to check that a change leaves products as they were.

Per HDU: its name, its header keywords (those of the run itself left out: DATE, CHECKSUM,
PARHASH...), and its data: the sha256 of integer data (exact), and for floating-point images
and tables the sum, the sum of squares and three fixed random projections of every column,
compared within a relative 1e-6: a change of one pixel by 0.1 % shows, while the last bits that
another CPU's BLAS or FFT may change do not.

`python tests/product_fingerprints.py OUT.json PRODUCT.fits...` writes the fingerprints of
products (how tests/data/single_pointing_products.json was made from main's products).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

VOLATILE_KEYWORDS = {"DATE", "CHECKSUM", "DATASUM", "CREATOR", "PARHASH", "CALDBHSH",
                     "FILENAME"}
RELATIVE_TOLERANCE = 1e-6


def _projections(values: np.ndarray) -> list[float]:
    flat = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=0.0,
                         posinf=0.0, neginf=0.0)
    weights = np.random.default_rng(26).standard_normal((3, flat.size))
    return [float(flat.sum()), float(flat @ flat), *map(float, weights @ flat)]


def _array_fingerprint(values) -> dict:
    values = np.asarray(values)
    if values.dtype.kind == "O":  # variable-length arrays (an RMF's MATRIX): their values
        values = np.concatenate([np.ravel(v) for v in values] or [np.zeros(0)])
    if values.dtype.kind in "iub":
        return {"sha256": hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest(),
                "shape": list(values.shape)}
    if values.dtype.kind in "SU":
        return {"text": [str(v).strip() for v in values.ravel()]}
    return {"stats": _projections(values), "shape": list(values.shape)}


def hdu_fingerprint(hdu) -> dict:
    header = {card.keyword: card.value for card in hdu.header.cards
              if card.keyword and card.keyword not in VOLATILE_KEYWORDS
              and card.keyword not in ("COMMENT", "HISTORY")}
    header = {key: (value if isinstance(value, (bool, int, float, str)) else str(value))
              for key, value in header.items()}
    if hdu.data is None:
        data = None
    elif hdu.data.dtype.names:
        data = {name: _array_fingerprint(hdu.data[name]) for name in hdu.data.dtype.names}
    else:
        data = _array_fingerprint(hdu.data)
    return {"name": hdu.name, "header": header, "data": data}


def product_fingerprint(path) -> list[dict]:
    with fits.open(path) as hdul:
        return [hdu_fingerprint(hdu) for hdu in hdul]


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(a, b, rtol=RELATIVE_TOLERANCE, atol=1e-9)) or a == b
    return a == b


def differences(ours: list[dict], reference: list[dict]) -> list[str]:
    """What differs between two fingerprints of one product (empty when the same)."""
    found = []
    names = [h["name"] for h in ours], [h["name"] for h in reference]
    if names[0] != names[1]:
        return [f"HDU names {names[0]} != {names[1]}"]
    for mine, theirs in zip(ours, reference):
        where = mine["name"]
        if sorted(mine["header"]) != sorted(theirs["header"]):
            found.append(f"{where}: keywords {sorted(set(mine['header']) ^ set(theirs['header']))}")
        for key in set(mine["header"]) & set(theirs["header"]):
            if not _close(mine["header"][key], theirs["header"][key]):
                found.append(f"{where}: {key} = {mine['header'][key]!r} != "
                             f"{theirs['header'][key]!r}")
        found += [f"{where}: {d}" for d in _data_differences(mine["data"], theirs["data"])]
    return found


def _data_differences(mine, theirs) -> list[str]:
    if mine is None or theirs is None:
        return [] if mine is theirs else ["data present in one only"]
    if "sha256" in theirs or "stats" in theirs or "text" in theirs:
        return _one_array(mine, theirs, "data")
    if sorted(mine) != sorted(theirs):
        return [f"columns {sorted(mine)} != {sorted(theirs)}"]
    return [d for column in theirs for d in _one_array(mine[column], theirs[column], column)]


def _one_array(mine, theirs, what) -> list[str]:
    if mine.get("shape") != theirs.get("shape"):
        return [f"{what}: shape {mine.get('shape')} != {theirs.get('shape')}"]
    if "stats" in theirs:
        if "stats" not in mine or not np.allclose(mine["stats"], theirs["stats"],
                                                  rtol=RELATIVE_TOLERANCE, atol=1e-9):
            return [f"{what}: values differ ({mine.get('stats')} != {theirs['stats']})"]
        return []
    key = "sha256" if "sha256" in theirs else "text"
    return [] if mine.get(key) == theirs[key] else [f"{what}: values differ"]


if __name__ == "__main__":
    out, *paths = sys.argv[1:]
    Path(out).write_text(json.dumps(
        {Path(p).name: product_fingerprint(p) for p in paths}, separators=(",", ":")) + "\n")
