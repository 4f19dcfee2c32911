"""FITS header-data units made and written without astropy's Header and HDU objects.

A product of a campaign is dozens of HDUs of a few hundred kB with sixty cards each; astropy
builds every card as an object, checks it against its configuration on each access and
verifies each again when writing: 0.15 s of CPU for one observation's sky images, more than
the imaging itself (BENCHMARKS.md). Here a header is a list of (keyword, value, comment)
formatted once, at writing, into the 80-character cards astropy makes of them (FITS 4.0
section 4; the same value formats: strings quoted and padded to 8 characters, numbers right-
aligned in 20 columns, floats as Python writes them with an upper-case exponent), and the data
are written as big-endian bytes with their checksums (FITS 4.0 appendix J).

`Header` keeps the part of astropy's Header interface that the product builders and
io/products.finish_header use (`h[key] = value` or `(value, comment)`, `h[key]`, `key in h`,
`get`, `cards`, `comments[key] = ...`, COMMENT cards kept last), so the same code finishes
both kinds. Units: `PrimaryUnit`, `ImageUnit` (numeric arrays, no scaling), `TableUnit`
(binary tables of scalar and fixed-width string columns); `to_astropy()` gives the astropy HDU
of each, for the rare product that mixes both kinds.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

CARD_LENGTH = 80
BLOCK = 2880
COMMENTARY = frozenset({"COMMENT", "HISTORY", ""})
_PRINTABLE = re.compile(r"^[ -~]*$")
# numpy dtype kind and size -> BITPIX (FITS 4.0 table 8); others are not written here
BITPIX = {("u", 1): 8, ("i", 2): 16, ("i", 4): 32, ("i", 8): 64, ("f", 4): -32, ("f", 8): -64}
# binary table TFORM letter -> big-endian numpy type (FITS 4.0 table 18)
TABLE_TYPES = {"L": "S1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


class Card(NamedTuple):
    keyword: str
    value: object
    comment: str


def format_value(value) -> str:
    """The value field of a card, as astropy.io.fits formats it."""
    if isinstance(value, str):
        if value == "":
            return "''"
        quoted = "'" + f"{value.replace(chr(39), chr(39) * 2):8}" + "'"
        return f"{quoted:20}"
    if isinstance(value, (bool, np.bool_)):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):>20d}"
    if isinstance(value, (float, np.floating)):
        return f"{_format_float(value):>20}"
    if value is None:
        return ""
    raise ValueError(f"cannot write a {type(value).__name__} in a FITS header: {value!r}")


def _format_float(value) -> str:
    """At most 20 characters: Python's shortest repr with an upper-case exponent, the
    mantissa cut when too long (astropy.io.fits.card._format_float)."""
    text = str(value).replace("e", "E")
    if len(text) > 20:
        exponent = text.find("E")
        text = text[:20] if exponent < 0 else text[:20 - (len(text) - exponent)] + text[exponent:]
    return text


def format_card(keyword: str, value, comment: str = "") -> str:
    """One header card (80 characters; more, as CONTINUE cards, for a long string)."""
    if keyword in COMMENTARY:
        text = f"{keyword:8}{value}"
        if len(text) > CARD_LENGTH:  # astropy splits long commentary text over cards
            return _astropy_card(keyword, value, comment)
        return f"{text:80}"
    _check_value(keyword, value)
    field = format_value(value)
    card = f"{keyword:8}= {field}"
    if comment:
        card += f" / {comment}"
    if len(card) <= CARD_LENGTH:
        return f"{card:80}"
    if isinstance(value, str) and len(field) > CARD_LENGTH - 10:
        return _astropy_card(keyword, value, comment)  # CONTINUE cards, as astropy makes them
    return card[:CARD_LENGTH]  # a comment too long for its card is cut


def _check_value(keyword, value):
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        raise ValueError(f"{keyword}: {value!r} cannot be written in a FITS header")
    if isinstance(value, str) and not _PRINTABLE.match(value):
        raise ValueError(f"{keyword}: FITS header values are printable ASCII; got {value!r}")


def _astropy_card(keyword, value, comment) -> str:
    from astropy.io import fits

    return fits.Card(keyword, value, comment).image


class _Comments:
    """header.comments[key] (astropy's interface)."""

    def __init__(self, keys):
        self._keys = keys

    def __getitem__(self, keyword):
        return self._keys[keyword.upper()][1]

    def __setitem__(self, keyword, comment):
        self._keys[keyword.upper()][1] = str(comment)


class Header:
    """Ordered cards with unique keywords, then the COMMENT and HISTORY cards: astropy puts a
    new keyword before the trailing commentary cards and a commentary card last, so these
    always end a header."""

    def __init__(self, cards=()):
        self._keys = {}  # keyword -> [value, comment], in order
        self._commentary = []  # (keyword, text)
        for keyword, value, comment in cards:
            self[keyword] = (value, comment)

    def __setitem__(self, keyword, value):
        value, comment = value if isinstance(value, tuple) else (value, None)
        keyword = keyword.upper()
        if keyword in COMMENTARY:
            self._commentary.append((keyword, str(value)))
        elif keyword in self._keys:
            card = self._keys[keyword]
            card[0] = value
            if comment is not None:
                card[1] = str(comment)
        else:
            self._keys[keyword] = [value, "" if comment is None else str(comment)]

    def __getitem__(self, keyword):
        return self._keys[keyword.upper()][0]

    def __contains__(self, keyword):
        return keyword.upper() in self._keys

    def get(self, keyword, default=None):
        card = self._keys.get(keyword.upper())
        return default if card is None else card[0]

    def __len__(self):
        return len(self._keys) + len(self._commentary)

    @property
    def cards(self):
        return [Card(keyword, value, comment) for keyword, (value, comment) in self._keys.items()] \
            + [Card(keyword, text, "") for keyword, text in self._commentary]

    @property
    def comments(self):
        return _Comments(self._keys)

    def tostring(self) -> str:
        """The header's cards, END, and blanks to a whole number of 2880-byte blocks."""
        text = "".join([format_card(keyword, value, comment)
                        for keyword, (value, comment) in self._keys.items()]
                       + [format_card(keyword, text, "") for keyword, text in self._commentary]
                       + [f"{'END':80}"])
        return text + " " * (-len(text) % BLOCK)


class Unit:
    """A header-data unit: `header`, `data` (bytes written big-endian), `name`."""

    header: Header

    @property
    def name(self) -> str:
        return str(self.header.get("EXTNAME", ""))

    def data_bytes(self) -> bytes:
        raise NotImplementedError

    def to_astropy(self):
        raise NotImplementedError

    def _astropy_header(self, hdu):
        for keyword, value, comment in self.header.cards:
            if keyword in COMMENTARY:
                hdu.header[keyword] = value  # appended, as here
            elif keyword not in hdu.header:
                hdu.header[keyword] = (value, comment)
        return hdu


class PrimaryUnit(Unit):
    """A primary HDU without data (the products' first HDU)."""

    def __init__(self):
        self.header = Header([("SIMPLE", True, "conforms to FITS standard"),
                              ("BITPIX", 8, "array data type"),
                              ("NAXIS", 0, "number of array dimensions"), ("EXTEND", True, "")])
        self.data = None

    def data_bytes(self) -> bytes:
        return b""

    def to_astropy(self):
        from astropy.io import fits

        return self._astropy_header(fits.PrimaryHDU())


class ImageUnit(Unit):
    """An IMAGE extension of a numeric array (unsigned bytes, signed integers, floats)."""

    def __init__(self, data, name: str = ""):
        self.data = np.asarray(data)
        bitpix = BITPIX.get((self.data.dtype.kind, self.data.dtype.itemsize))
        if bitpix is None:
            raise ValueError(f"image {name}: no FITS BITPIX for {self.data.dtype}")
        cards = [("XTENSION", "IMAGE", "Image extension"), ("BITPIX", bitpix, "array data type"),
                 ("NAXIS", self.data.ndim, "number of array dimensions")]
        cards += [(f"NAXIS{axis}", length, "")
                  for axis, length in enumerate(reversed(self.data.shape), start=1)]
        cards += [("PCOUNT", 0, "number of parameters"), ("GCOUNT", 1, "number of groups")]
        if name:
            cards.append(("EXTNAME", name, "extension name"))
        self.header = Header(cards)

    def data_bytes(self) -> bytes:
        big = self.data.astype(self.data.dtype.newbyteorder(">"), copy=False)
        return np.ascontiguousarray(big).tobytes()

    def to_astropy(self):
        from astropy.io import fits

        return self._astropy_header(fits.ImageHDU(np.ascontiguousarray(self.data),
                                                  name=self.name or None))


class TableUnit(Unit):
    """A BINTABLE of scalar columns (TFORM L, B, I, J, K, E, D) and strings (TFORM nA), given
    as (name, TFORM, unit or None, values); strings are NUL-padded, logicals 'T'/'F'."""

    def __init__(self, name: str, columns, n_rows: int):
        self._columns = [(column, fmt, unit) for column, fmt, unit, _ in columns]
        fields = [(column, _table_dtype(fmt)) for column, fmt, _, _ in columns]
        self.data = np.zeros(n_rows, dtype=fields)
        for column, fmt, _, values in columns:
            if values is None or not n_rows:
                continue
            if fmt == "L":
                self.data[column] = np.where(np.asarray(values, bool), b"T", b"F")
            elif fmt.endswith("A"):
                self.data[column] = np.char.encode(np.asarray(values, dtype=str), "ascii")
            else:
                self.data[column] = values
        cards = [("XTENSION", "BINTABLE", "binary table extension"),
                 ("BITPIX", 8, "array data type"), ("NAXIS", 2, "number of array dimensions"),
                 ("NAXIS1", self.data.dtype.itemsize, "length of dimension 1"),
                 ("NAXIS2", n_rows, "length of dimension 2"),
                 ("PCOUNT", 0, "number of group parameters"), ("GCOUNT", 1, "number of groups"),
                 ("TFIELDS", len(columns), "number of table fields")]
        for index, (column, fmt, unit) in enumerate(self._columns, start=1):
            cards += [(f"TTYPE{index}", column, ""), (f"TFORM{index}", fmt, "")]
            if unit:
                cards.append((f"TUNIT{index}", unit, ""))
        cards.append(("EXTNAME", name, "extension name"))
        self.header = Header(cards)

    def data_bytes(self) -> bytes:
        return self.data.tobytes()

    def to_astropy(self):
        from astropy.io import fits

        columns = []
        for column, fmt, unit in self._columns:
            values = self.data[column]
            if fmt == "L":
                values = values == b"T"
            elif fmt.endswith("A"):
                values = np.char.decode(values, "ascii")
            columns.append(fits.Column(name=column, format=fmt, unit=unit, array=values))
        table = fits.BinTableHDU.from_columns(columns, name=self.name, nrows=len(self.data))
        return self._astropy_header(table)


def _table_dtype(fmt: str) -> str:
    if fmt.endswith("A"):
        return f"S{int(fmt[:-1] or 1)}"
    if fmt not in TABLE_TYPES:
        raise ValueError(f"binary table column format {fmt!r} is not written here")
    return TABLE_TYPES[fmt]


# ============================================================================================
# Checksums (FITS 4.0 appendix J; Seaman et al. 2012) and writing
# ============================================================================================
_CHECKSUM_EXCLUDED = frozenset(b":;<=>?@[\\]^_`")


class FitsChecksum:
    """The 32-bit ones' complement sum of a byte stream fed in pieces of any length."""

    def __init__(self):
        self._sum = 0
        self._pending = b""  # the bytes of an incomplete 32-bit word

    def update(self, data) -> None:
        view = memoryview(data).cast("B")
        if self._pending:  # complete the word left over by the previous piece
            need = 4 - len(self._pending)
            self._pending += bytes(view[:need])
            view = view[need:]
            if len(self._pending) < 4:
                return
            self._sum += int.from_bytes(self._pending, "big")
            self._pending = b""
        whole = len(view) - len(view) % 4
        if whole:  # no copy of the piece: summed where it is
            self._sum += int(np.frombuffer(view[:whole], dtype=">u4").sum(dtype="u8"))
            self._fold()
        self._pending = bytes(view[whole:])

    def _fold(self):
        while self._sum >> 32:
            self._sum = (self._sum & 0xFFFFFFFF) + (self._sum >> 32)

    @property
    def value(self) -> int:
        """The sum so far, the last word padded with zeros (as FITS padding does)."""
        total = self._sum + (int.from_bytes(self._pending.ljust(4, b"\0"), "big")
                             if self._pending else 0)
        while total >> 32:
            total = (total & 0xFFFFFFFF) + (total >> 32)
        return total


def encode_checksum(value: int) -> str:
    """The 16-character ASCII encoding of the complement of a checksum (FITS 4.0 J.2)."""
    value = ~value & 0xFFFFFFFF
    encoded = [0] * 16
    for byte_index in range(4):
        byte = (value >> (24 - 8 * byte_index)) & 0xFF
        chars = [byte // 4 + ord("0") + byte % 4] + [byte // 4 + ord("0")] * 3
        changed = True
        while changed:  # move pairs off the punctuation characters, keeping their sum
            changed = False
            for j in (0, 2):
                if chars[j] in _CHECKSUM_EXCLUDED or chars[j + 1] in _CHECKSUM_EXCLUDED:
                    chars[j] += 1
                    chars[j + 1] -= 1
                    changed = True
        for j in range(4):
            encoded[4 * j + byte_index] = chars[j]
    return bytes(encoded[15:] + encoded[:15]).decode("ascii")


def write_units(stream, units, date: str) -> None:
    """Write units one after the other to a binary stream, each with its DATASUM and the
    CHECKSUM that makes its sum zero (their comments say when, `date`, as astropy's do)."""
    for unit in units:
        data = unit.data_bytes()
        datasum = FitsChecksum()
        datasum.update(data)  # the zeros padding the data add nothing
        header = unit.header
        header["CHECKSUM"] = ("0" * 16, f"HDU checksum updated {date}")
        header["DATASUM"] = (str(datasum.value), f"data unit checksum updated {date}")
        text = header.tostring()
        total = FitsChecksum()
        total.update(text.encode("ascii"))
        total.update(datasum.value.to_bytes(4, "big"))
        checksum = encode_checksum(total.value)
        header["CHECKSUM"] = checksum
        at = next(offset for offset in range(0, len(text), CARD_LENGTH)
                  if text.startswith("CHECKSUM= '", offset)) + 11  # 16 characters, in place
        stream.write((text[:at] + checksum + text[at + 16:]).encode("ascii"))
        stream.write(data)
        stream.write(b"\0" * (-len(data) % BLOCK))
