"""Row-range reads of FITS tables: equal to astropy's full read, fetching only the rows' bytes."""
import gzip

import numpy as np
import pytest
from astropy.io import fits

from ecpi_beam.errors import EcpiError
from ecpi_beam.io import events, fs
from ecpi_beam.io.gti import gti_hdu

N_EVENTS = 3000


def event_hdulist(n_rows=N_EVENTS, seed=0, obs_id="0123456789") -> fits.HDUList:
    """A small ECL-EVT-SEC file as the ICD describes it: primary, EVENTS, GTI."""
    rng = np.random.default_rng(seed)
    time = np.sort(rng.uniform(0.0, 100.0, n_rows))
    columns = [fits.Column(name="TIME", format="D", unit="s", array=time),
               fits.Column(name="IDET", format="B", array=rng.integers(0, 80, n_rows)),
               fits.Column(name="JDET", format="B", array=rng.integers(0, 80, n_rows)),
               fits.Column(name="PHA", format="I", array=rng.integers(0, 4096, n_rows)),
               fits.Column(name="FLAG", format="B", array=rng.integers(0, 4, n_rows))]
    primary = fits.PrimaryHDU()
    primary.header.update({"TELESCOP": "SVOM", "OBS_ID": obs_id, "TSTART": 0.0,
                           "TSTOP": 100.0, "MJDREFI": 57754, "MJDREFF": 0.000800740741,
                           "TIMESYS": "TT", "TIMEUNIT": "s"})
    table = fits.BinTableHDU.from_columns(columns, name="EVENTS")
    table.header["INSTRUME"] = "ECLAIRs"
    return fits.HDUList([primary, table, gti_hdu([[0.0, 40.0], [45.0, 100.0]])])


def write_event_file(url: str, n_rows=N_EVENTS, seed=0, obs_id="0123456789") -> str:
    """Write the small event file at a local path or any URL; returns the URL."""
    with fs.atomic_write(url) as stream:
        event_hdulist(n_rows, seed, obs_id).writeto(stream)
    return url


@pytest.fixture
def event_file(tmp_path):
    return write_event_file(str(tmp_path / "ECL-EVT-SEC_test.fits"))


def astropy_events(path):
    with fits.open(path) as hdul:
        data = hdul["EVENTS"].data
        return {name: np.array(data[name]) for name in events.EVENT_DTYPE.names}


def test_layout_from_headers(event_file):
    layout = events.table_layout(event_file)
    assert layout.n_rows == N_EVENTS
    assert layout.row_bytes == 8 + 1 + 1 + 2 + 1
    assert layout.data_offset % 2880 == 0 and layout.data_offset >= 2 * 2880
    assert [c.name for c in layout.columns] == ["TIME", "IDET", "JDET", "PHA", "FLAG"]
    assert layout.column("pha").offset == 10 and layout.column("PHA").dtype == ">i2"
    assert layout.header["INSTRUME"] == "ECLAIRs"


@pytest.mark.parametrize("first, count", [(0, N_EVENTS), (0, 1), (1234, 500),
                                          (N_EVENTS - 7, 7), (10, 0)])
def test_read_rows_equals_astropy(event_file, first, count):
    rows = events.read_rows(event_file, first, count)
    expected = astropy_events(event_file)
    assert rows.dtype == events.EVENT_DTYPE and rows.dtype.isnative
    assert len(rows) == count
    for name in events.EVENT_DTYPE.names:
        np.testing.assert_array_equal(rows[name], expected[name][first:first + count])


def test_read_rows_fetches_only_the_rows(event_file, monkeypatch):
    layout = events.table_layout(event_file)
    requests = []
    real = fs.read_range

    def recording(url, start, length):
        requests.append((start, length))
        return real(url, start, length)

    monkeypatch.setattr(fs, "read_range", recording)
    events.read_rows(event_file, 100, 20, layout=layout)
    assert requests == [(layout.data_offset + 100 * 13, 20 * 13)]


def test_chunk_ranges_cover_every_row_once():
    assert events.chunk_ranges(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert events.chunk_ranges(0, 4) == []
    ranges = events.chunk_ranges(1_000_003, 100_000)
    assert sum(n for _, n in ranges) == 1_000_003 and ranges[-1] == (1_000_000, 3)
    with pytest.raises(ValueError):
        events.chunk_ranges(10, 0)


def test_chunks_concatenate_to_the_whole_table(event_file):
    layout = events.table_layout(event_file)
    chunks = [events.read_rows(event_file, first, n, layout)
              for first, n in events.chunk_ranges(layout.n_rows, 700)]
    np.testing.assert_array_equal(np.concatenate(chunks),
                                  events.read_rows(event_file, 0, N_EVENTS, layout))


def test_gzip_file_reads_the_same(event_file, tmp_path):
    gz_path = str(tmp_path / "ECL-EVT-SEC_test.fits.gz")
    with open(event_file, "rb") as raw, gzip.open(gz_path, "wb") as packed:
        packed.write(raw.read())
    layout = events.table_layout(gz_path)
    assert layout.data_offset == events.table_layout(event_file).data_offset
    np.testing.assert_array_equal(events.read_rows(gz_path, 500, 300, layout),
                                  events.read_rows(event_file, 500, 300))
    assert events.read_primary_header(gz_path)["OBS_ID"] == "0123456789"


def test_memory_url_reads_the_same(event_file):
    url = write_event_file("memory://events-test/obs/ECL-EVT-SEC_test.fits")
    np.testing.assert_array_equal(events.read_rows(url, 17, 900),
                                  events.read_rows(event_file, 17, 900))


def test_scaled_and_unsigned_columns(tmp_path):
    raw_pha = np.array([0, 1, 40000, 65535], dtype=np.uint16)  # needs TZERO = 32768
    columns = [fits.Column(name="TIME", format="D", array=[1.0, 2.0, 3.0, 4.0]),
               fits.Column(name="IDET", format="B", array=[1, 2, 3, 4]),
               fits.Column(name="JDET", format="B", array=[5, 6, 7, 8]),
               fits.Column(name="PHA", format="I", bzero=32768, array=raw_pha),
               fits.Column(name="FLAG", format="B", array=[0, 1, 2, 3]),
               fits.Column(name="GAIN", format="J", array=[0, 2, 5, 20]),
               fits.Column(name="OK", format="L", array=[True, False, True, True])]
    path = str(tmp_path / "scaled.fits")
    fits.BinTableHDU.from_columns(columns, name="EVENTS").writeto(path)
    # GAIN = 0.5 * stored + 10, set afterwards (astropy cannot write scaled integer columns)
    fits.setval(path, "TSCAL6", value=0.5, ext=1)
    fits.setval(path, "TZERO6", value=10.0, ext=1)
    table, header = events.read_table(path, "EVENTS")
    np.testing.assert_array_equal(table["PHA"], raw_pha)
    assert table["PHA"].dtype == np.uint16
    np.testing.assert_allclose(table["GAIN"], [10, 11, 12.5, 20])
    with fits.open(path) as hdul:
        np.testing.assert_allclose(hdul[1].data["GAIN"], table["GAIN"])
    np.testing.assert_array_equal(table["OK"], [True, False, True, True])
    assert header["TZERO4"] == 32768


def test_read_table_vector_columns(tmp_path):
    quaternions = np.random.default_rng(1).normal(size=(50, 4))
    columns = [fits.Column(name="TIME", format="D", array=np.arange(50.0)),
               fits.Column(name="QPARAM", format="4D", array=quaternions),
               fits.Column(name="FLAG_ATT", format="B", array=np.full(50, 0xAA))]
    path = str(tmp_path / "SVO-ATT-CNV_test.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="ATTITUDE")]
                 ).writeto(path)
    table, header = events.read_table(path, "ATTITUDE")
    assert table["QPARAM"].shape == (50, 4) and table.dtype["QPARAM"].base.isnative
    np.testing.assert_array_equal(table["QPARAM"], quaternions)
    assert (table["FLAG_ATT"] == 0xAA).all() and header["EXTNAME"] == "ATTITUDE"


def test_missing_extension_names_file_and_extension(event_file):
    with pytest.raises(EcpiError, match=r"ECL-EVT-SEC_test\.fits: no extension ORBIT "
                                        r"\(extensions: PRIMARY, EVENTS, GTI\)"):
        events.table_layout(event_file, "ORBIT")


def test_missing_column_names_file_extension_and_column(event_file):
    dtype = np.dtype([("TIME", "f8"), ("PI", "i2")])
    with pytest.raises(EcpiError, match=r"ECL-EVT-SEC_test\.fits: extension EVENTS has no "
                                        r"column PI"):
        events.read_rows(event_file, 0, 10, dtype=dtype)


def test_truncated_file_is_reported(event_file, tmp_path):
    cut = str(tmp_path / "cut.fits")
    with open(event_file, "rb") as whole:
        data = whole.read()
    with open(cut, "wb") as part:
        part.write(data[:2880 * 3 + 100])
    with pytest.raises(EcpiError, match=r"cut\.fits: truncated file: extension EVENTS"):
        events.table_layout(cut)


@pytest.mark.parametrize("content, message", [
    (b"", "empty file, not FITS"),
    (b"hello world\n" * 500, "no END card"),
    (("XTENSION= 'BINTABLE'" + " " * 60 + "END" + " " * 77).encode() + b" " * 2720,
     "no SIMPLE keyword"),
])
def test_not_fits(tmp_path, content, message):
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(EcpiError, match=message):
        events.table_layout(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(EcpiError, match=r"absent\.fits: file not found"):
        events.table_layout(str(tmp_path / "absent.fits"))


def test_rows_outside_the_table_are_a_programming_error(event_file):
    with pytest.raises(ValueError, match="outside"):
        events.read_rows(event_file, N_EVENTS - 5, 10)


def test_calibrated_dtype_extends_event_dtype():
    assert events.CALIBRATED_DTYPE.names == events.EVENT_DTYPE.names + ("PI", "ENERGY")
    assert events.CALIBRATED_DTYPE["PI"] == np.int16
    assert events.CALIBRATED_DTYPE["ENERGY"] == np.float32
