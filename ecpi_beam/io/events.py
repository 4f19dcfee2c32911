"""Row-range reads of FITS binary tables, local or remote (ICD section 2).

An orbit of events is about 240 MB, so nothing here reads a whole event file: `table_layout`
walks the headers (a few 2880-byte blocks, via byte-range reads) to find where the table's
rows start and how they are laid out, and `read_rows` fetches exactly the bytes of the rows it
is asked for (one HTTP range request on object stores), converting big-endian FITS to native.

Gzipped files (.gz) cannot be read at an offset without decompressing everything before it:
they are streamed through gzip and the leading bytes discarded, so each chunk costs a
decompression from the start of the file. Prefer uncompressed inputs for large campaigns.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import fs

EVENT_DTYPE = np.dtype([("TIME", "f8"), ("IDET", "u1"), ("JDET", "u1"), ("PHA", "i2"),
                        ("FLAG", "u1")])
CALIBRATED_DTYPE = np.dtype([(name, EVENT_DTYPE[name]) for name in EVENT_DTYPE.names]
                            + [("PI", "i2"), ("ENERGY", "f4")])

BLOCK = 2880
CARD = 80
_HEADER_READ_BLOCKS = 4  # headers are read 11.5 kB at a time
# FITS binary-table TFORM letters -> big-endian numpy types (FITS standard 4.0, table 18)
_TFORM_TYPES = {"L": "i1", "X": "u1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8",
                "A": "S1", "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16"}
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])", re.IGNORECASE)


@dataclass(frozen=True)
class ColumnLayout:
    name: str
    tform: str
    offset: int  # bytes from the start of a row
    dtype: str  # big-endian numpy type of one element, e.g. '>f8'
    shape: tuple[int, ...]  # () for scalars, (4,) for 4D
    tzero: float = 0.0
    tscal: float = 1.0
    unit: str = ""


@dataclass(frozen=True)
class TableLayout:
    url: str
    extname: str
    n_rows: int
    row_bytes: int
    data_offset: int  # bytes from the start of the (uncompressed) file
    columns: tuple[ColumnLayout, ...]
    header: dict = dataclasses.field(compare=False, hash=False, repr=False)

    def column(self, name: str) -> ColumnLayout:
        for column in self.columns:
            if column.name.upper() == name.upper():
                return column
        raise EcpiError(f"{self.url}: extension {self.extname} has no column {name} "
                        f"(columns: {', '.join(c.name for c in self.columns)})")

    def row_dtype(self) -> np.dtype:
        """The big-endian numpy type of one whole row, as stored in the file."""
        return np.dtype({"names": [c.name for c in self.columns],
                         "formats": [(c.dtype, c.shape) if c.shape else c.dtype
                                     for c in self.columns],
                         "offsets": [c.offset for c in self.columns],
                         "itemsize": self.row_bytes})


# ============================================================================================
# Bytes of a file, compressed or not
# ============================================================================================
class _RangeSource:
    """read(start, length) over a plain file: byte-range requests, retried."""

    def __init__(self, url: str):
        self.url = url

    def read(self, start: int, length: int) -> bytes:
        return fs.read_range(self.url, start, length)

    def size(self) -> int | None:
        return fs.size(self.url)


class _GzipSource:
    """read(start, length) over a .gz file: forward seeks decompress and discard."""

    def __init__(self, stream, url: str = ""):
        self.gzip = gzip.GzipFile(fileobj=stream, mode="rb")
        self.url = url

    def read(self, start: int, length: int) -> bytes:
        try:
            self.gzip.seek(start)
            return self.gzip.read(length)
        except EOFError:  # the stream ends before gzip's end marker: a cut download or copy
            raise EcpiError(f"{self.url}: truncated gzip file (the compressed data end before "
                            f"byte {start + length} of the FITS file)") from None

    def size(self) -> int | None:
        return None  # unknown without decompressing it all


@contextlib.contextmanager
def _open_source(url: str):
    try:
        if url.endswith(".gz"):
            with fs.open_file(url, "rb") as stream:
                yield _GzipSource(stream, url)
        else:
            yield _RangeSource(url)
    except FileNotFoundError:
        raise EcpiError(f"{url}: file not found") from None
    except (gzip.BadGzipFile, EOFError) as err:
        raise EcpiError(f"{url}: corrupt gzip data ({err})") from None


# ============================================================================================
# Headers
# ============================================================================================
# Parsed headers of local files, by (url, start, the file's size, mtime, ctime, inode): an
# observation's seven headers are asked for some twenty-four times in a run (DPCO, the chunk
# reads, resume, progress) and astropy parses a header in milliseconds. A file rewritten
# since is another key; remote files are not kept (their identity would cost a request).
_PARSED_HEADERS: dict = {}
_PARSED_HEADERS_KEPT = 512


def _header_key(source, url: str, start: int):
    if not isinstance(source, _RangeSource) or not fs.is_local(url):
        return None
    try:
        stat = os.stat(fs.filesystem(url)[1])
    except OSError:
        return None
    return url, start, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _read_header(source, url: str, start: int) -> tuple[fits.Header, int]:
    """The header starting at byte `start` and the number of bytes it occupies (the same
    Header object again for a local file unchanged since: callers do not modify it)."""
    key = _header_key(source, url, start)
    parsed = _PARSED_HEADERS.get(key) if key is not None else None
    if parsed is None:
        parsed = _parse_header_at(source, url, start)
        if key is not None:
            if len(_PARSED_HEADERS) >= _PARSED_HEADERS_KEPT:
                _PARSED_HEADERS.clear()
            _PARSED_HEADERS[key] = parsed
    return parsed


def _parse_header_at(source, url: str, start: int) -> tuple[fits.Header, int]:
    text = b""
    while True:
        block = source.read(start + len(text), BLOCK * _HEADER_READ_BLOCKS)
        if not text and not block:
            raise EOFError
        text += block
        for index in range(0, len(text) - CARD + 1, CARD):
            if text[index:index + CARD].rstrip() == b"END":
                header_bytes = -(-(index + CARD) // BLOCK) * BLOCK
                return _parse_header(text[:index + CARD], url), header_bytes
        if len(block) < BLOCK * _HEADER_READ_BLOCKS:
            raise EcpiError(f"{url}: truncated or not a FITS file (no END card in the header "
                            f"at byte {start})")


def _parse_header(raw: bytes, url: str) -> fits.Header:
    try:
        header = fits.Header.fromstring(raw.decode("ascii"))
        for _ in header.items():  # astropy parses cards lazily: find a bad one here
            pass
        return header
    except (UnicodeDecodeError, ValueError) as err:
        raise EcpiError(f"{url}: not a FITS file (bad header: {err})") from None
    except fits.VerifyError as err:  # e.g. a newline or another control character in a card
        raise EcpiError(f"{url}: header card not valid FITS "
                        f"({str(err).split(',')[0]}); expected printable ASCII") from None


def _data_bytes(header: fits.Header) -> int:
    """Size of an HDU's data, padded to whole 2880-byte blocks (FITS standard 4.4.1.1)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    elements = 1
    first_axis = 2 if header.get("GROUPS") and header.get("NAXIS1") == 0 else 1
    for axis in range(first_axis, naxis + 1):
        elements *= int(header[f"NAXIS{axis}"])
    size = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (
        int(header.get("PCOUNT", 0)) + elements)
    return -(-size // BLOCK) * BLOCK


def _header_dict(header: fits.Header) -> dict:
    return {key: value for key, value in header.items()
            if key not in ("COMMENT", "HISTORY", "")}


def _find_extension(source, url: str, extname: str) -> tuple[fits.Header, int]:
    """(header, data offset) of the first HDU named `extname` (case-insensitive)."""
    start, names = 0, []
    while True:
        try:
            header, header_bytes = _read_header(source, url, start)
        except EOFError:
            if start == 0:
                raise EcpiError(f"{url}: empty file, not FITS") from None
            raise EcpiError(f"{url}: no extension {extname} (extensions: "
                            f"{', '.join(names) or 'none'})") from None
        if start == 0 and "SIMPLE" not in header:
            raise EcpiError(f"{url}: not a FITS file (no SIMPLE keyword)")
        name = str(header.get("EXTNAME", "PRIMARY" if start == 0 else "")).strip()
        if name.upper() == extname.upper():
            return header, start + header_bytes
        names.append(name)
        start += header_bytes + _data_bytes(header)


def read_primary_header(url: str) -> dict:
    """The primary header's keywords (COMMENT and HISTORY dropped)."""
    with _open_source(url) as source:
        try:
            header, _ = _read_header(source, url, 0)
        except EOFError:
            raise EcpiError(f"{url}: empty file, not FITS") from None
    if "SIMPLE" not in header:
        raise EcpiError(f"{url}: not a FITS file (no SIMPLE keyword)")
    return _header_dict(header)


# ============================================================================================
# Table layout
# ============================================================================================
def _column_layouts(header: fits.Header, url: str, extname: str) -> tuple[ColumnLayout, ...]:
    columns, offset = [], 0
    for index in range(1, int(header.get("TFIELDS", 0)) + 1):
        name = str(header.get(f"TTYPE{index}", f"COL{index}")).strip()
        tform = str(header[f"TFORM{index}"]).strip()
        match = _TFORM.match(tform)
        if match is None or match.group(2).upper() in "PQ":
            raise EcpiError(f"{url}: extension {extname} column {name}: unsupported TFORM "
                            f"'{tform}' (variable-length arrays are not read)")
        repeat = int(match.group(1) or 1)
        letter = match.group(2).upper()
        if letter == "A":
            dtype, shape, width = f"S{repeat}", (), repeat
        elif letter == "X":
            dtype, shape, width = "u1", ((repeat + 7) // 8,), (repeat + 7) // 8
        else:
            dtype = _TFORM_TYPES[letter]
            shape = () if repeat == 1 else (repeat,)
            width = np.dtype(dtype).itemsize * repeat
        if width:
            columns.append(ColumnLayout(
                name=name, tform=tform, offset=offset, dtype=dtype, shape=shape,
                tzero=float(header.get(f"TZERO{index}", 0.0)),
                tscal=float(header.get(f"TSCAL{index}", 1.0)),
                unit=str(header.get(f"TUNIT{index}", ""))))
        offset += width
    if offset != int(header["NAXIS1"]):
        raise EcpiError(f"{url}: extension {extname}: TFORMs add up to {offset} bytes per row, "
                        f"NAXIS1 says {header['NAXIS1']}")
    return tuple(columns)


def table_layout(url: str, extname: str = "EVENTS") -> TableLayout:
    """Where and how a binary table's rows are stored, from the headers only."""
    with _open_source(url) as source:
        header, data_offset = _find_extension(source, url, extname)
        file_size = source.size()
    if header.get("XTENSION", "").strip() != "BINTABLE":
        raise EcpiError(f"{url}: extension {extname} is not a binary table "
                        f"(XTENSION = {header.get('XTENSION', 'none')})")
    layout = TableLayout(url=url, extname=extname, n_rows=int(header["NAXIS2"]),
                         row_bytes=int(header["NAXIS1"]), data_offset=data_offset,
                         columns=_column_layouts(header, url, extname),
                         header=_header_dict(header))
    needed = layout.data_offset + layout.n_rows * layout.row_bytes
    if file_size is not None and file_size < needed:
        raise EcpiError(f"{url}: truncated file: extension {extname} needs {needed} bytes, "
                        f"the file has {file_size}")
    return layout


def chunk_ranges(n_rows: int, chunk_size: int) -> list[tuple[int, int]]:
    """[(first_row, n_rows), ...] covering n_rows rows in chunks of at most chunk_size."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [(first, min(chunk_size, n_rows - first)) for first in range(0, n_rows, chunk_size)]


# ============================================================================================
# Rows
# ============================================================================================
def _to_native(raw: np.ndarray, column: ColumnLayout, target: np.dtype | None) -> np.ndarray:
    """A column's values in native byte order, TZERO/TSCAL applied, cast to `target`."""
    values = raw
    if column.tform.upper().endswith("L"):  # logical: 'T' / 'F' bytes
        values = raw == ord("T")
    elif column.tscal != 1.0 or column.tzero != 0.0:
        integral = column.tscal == 1.0 and float(column.tzero).is_integer()
        if integral and np.dtype(column.dtype).kind in "iu":
            shifted = raw.astype(np.int64) + int(column.tzero)
            # the FITS unsigned-integer convention: TZERO = 2**(bits-1)
            bits = np.dtype(column.dtype).itemsize * 8
            natural = np.dtype(f"u{bits // 8}") if column.tzero == 2 ** (bits - 1) else None
            values = shifted.astype(natural) if natural is not None and target is None \
                else shifted
        else:
            values = raw.astype(np.float64) * column.tscal + column.tzero
    else:
        values = raw.astype(raw.dtype.newbyteorder("="))
    return values if target is None else values.astype(target, copy=False)


def _is_plain(column: ColumnLayout) -> bool:
    """Stored as it is read: no logical conversion, no TZERO/TSCAL."""
    return (not column.tform.upper().endswith("L") and column.tscal == 1.0
            and column.tzero == 0.0)


def _rows_from_bytes(buffer: bytes, layout: TableLayout, dtype: np.dtype | None,
                     n_rows: int) -> np.ndarray:
    raw = np.frombuffer(buffer, dtype=layout.row_dtype(), count=n_rows)
    names = dtype.names if dtype is not None else [c.name for c in layout.columns]
    columns = [layout.column(name) for name in names]
    if dtype is not None and all(_is_plain(column) for column in columns):
        out = np.empty(n_rows, dtype=dtype)
        for name, column in zip(names, columns):
            out[name] = raw[column.name]  # byte swap and cast in one pass, no temporary
        return out
    converted = [_to_native(raw[column.name], column,
                            dtype[name] if dtype is not None else None)
                 for name, column in zip(names, columns)]
    out_dtype = dtype if dtype is not None else np.dtype(
        [(name, values.dtype, values.shape[1:]) for name, values in zip(names, converted)])
    out = np.empty(n_rows, dtype=out_dtype)
    for name, values in zip(names, converted):
        out[name] = values
    return out


def read_rows(url: str, first_row: int, n_rows: int, layout: TableLayout | None = None,
              dtype: np.dtype = EVENT_DTYPE, extname: str = "EVENTS") -> np.ndarray:
    """Rows [first_row, first_row + n_rows) of a table, as a native array of `dtype`.

    The columns read are dtype's field names; only those rows' bytes are fetched.
    """
    layout = layout or table_layout(url, extname)
    if first_row < 0 or n_rows < 0 or first_row + n_rows > layout.n_rows:
        raise ValueError(f"rows [{first_row}, {first_row + n_rows}) outside the "
                         f"{layout.n_rows} rows of {url}[{layout.extname}]")
    for name in dtype.names:
        layout.column(name)  # a missing column is reported before any data is fetched
    start = layout.data_offset + first_row * layout.row_bytes
    length = n_rows * layout.row_bytes
    with _open_source(url) as source:
        buffer = source.read(start, length) if length else b""
    if len(buffer) != length:
        raise EcpiError(f"{url}: truncated file: extension {layout.extname} rows "
                        f"{first_row}..{first_row + n_rows - 1} need {length} bytes from byte "
                        f"{start}, got {len(buffer)}")
    return _rows_from_bytes(buffer, layout, dtype, n_rows)


def read_table(url: str, extname: str) -> tuple[np.ndarray, dict]:
    """A whole (small) table: attitude, orbit, GTI. Native byte order, TZERO/TSCAL applied;
    vector columns such as QPARAM (4D) come out as (n, 4) sub-arrays."""
    layout = table_layout(url, extname)
    length = layout.n_rows * layout.row_bytes
    with _open_source(url) as source:
        buffer = source.read(layout.data_offset, length) if length else b""
    if len(buffer) != length:
        raise EcpiError(f"{url}: truncated file: extension {extname} needs {length} bytes of "
                        f"rows, got {len(buffer)}")
    return _rows_from_bytes(buffer, layout, None, layout.n_rows), layout.header
