"""The whole chain as one plain numpy loop, without Beam: the floor `ecpi_run` is measured against.

    python benchmarks/bare_numpy_chain.py params.ini [--out DIR] [--no-products]

Same parameter file, same input triplet(s), same kernels as the pipeline, one process:
  read the small tables and headers of the triplet (ATTITUDE, ORBIT, GTI), the good time
  (kernels.gti) and the imaging timeline with its occultation-class GTIs (kernels.timeline);
  then the EVENTS rows chunk by chunk ([cali] chunk_size; io.events.read_rows), each checked
  (kernels.consistency.check_event_chunk), calibrated (kernels.calibrate) and binned for every
  (band, occ) at once, forced triggers excluded (kernels.intervals.mask_times,
  kernels.binning.keyed_histograms), summed into 80 x 80 images;
  then per (band, occ) the background (kernels.background), the balanced correlation
  (kernels.imaging) and the source detection with iterative cleaning (kernels.cleaning,
  kernels.detection), as transforms/imag.py does.
Products: the ones the parameter file asks for are written with the project's HDU builders and
writer (io.image_products, io.products) to --out (default <working_out>/bare-numpy/);
ECL-EVT-CAL is streamed chunk by chunk into one FITS file (header, rows, padding, GTI), so that
the comparison with `ecpi_run` includes the same I/O. --no-products writes nothing.
Prints the sources found and the time spent per stage.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from types import SimpleNamespace

T0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ecpi_beam  # noqa: E402,F401  (first: one BLAS thread, as ecpi_run; ecpi_beam/__init__.py)
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from ecpi_beam import instrument  # noqa: E402
from ecpi_beam.caldb import Caldb  # noqa: E402
from ecpi_beam.io import events as event_io  # noqa: E402
from ecpi_beam.io import fs  # noqa: E402
from ecpi_beam.io import gti as gti_io  # noqa: E402
from ecpi_beam.io import image_products, products  # noqa: E402
from ecpi_beam.io.events import CALIBRATED_DTYPE  # noqa: E402
from ecpi_beam.kernels import binning, consistency, intervals  # noqa: E402
from ecpi_beam.kernels.bube import BackgroundCorrector  # noqa: E402
from ecpi_beam.kernels.calibrate import calibrate_events  # noqa: E402
from ecpi_beam.kernels.gti import good_time, telemetry_gti  # noqa: E402
from ecpi_beam.kernels.sky_analysis import SkyAnalyser, source_rows  # noqa: E402
from ecpi_beam.kernels.timeline import imaging_timeline  # noqa: E402
from ecpi_beam.params import load_params  # noqa: E402
from ecpi_beam.workspace import resolve_caldb_dir  # noqa: E402

OBSERVATION_KEYWORDS = consistency.PRIMARY_KEYWORDS + ("DATE-OBS", "DATE-END", "OBJECT")
GTI_EXTENSIONS = {"TLM": "GTI_TLM", "SAA": "GTI_SAA", "ATT": "GTI_ATT", "ALL": "GTI"}
ROW_DTYPE = CALIBRATED_DTYPE.newbyteorder(">")
EVENT_TFORMS = {"TIME": "D", "IDET": "B", "JDET": "B", "PHA": "I", "FLAG": "B", "PI": "I",
                "ENERGY": "E"}


class Stopwatch:
    """Seconds per stage name, accumulated."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self._last = time.perf_counter()

    def lap(self, stage):
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def load_observation(obs_dir):
    """What the pipeline's Observation holds (headers, attitude, orbit, telemetry GTI)."""
    triplet = fs.find_triplet(obs_dir)
    evt_url = triplet["ECL-EVT-SEC"]
    primary = event_io.read_primary_header(evt_url)
    attitude, _ = event_io.read_table(triplet["SVO-ATT-CNV"], "ATTITUDE")
    orbit, _ = event_io.read_table(triplet["SVO-ORB-CNV"], "ORBIT")
    gti, _ = event_io.read_table(evt_url, "GTI")
    layout = event_io.table_layout(evt_url, "EVENTS")
    return SimpleNamespace(
        obs_id=str(primary["OBS_ID"]).strip(), obs_dir=obs_dir, evt_url=evt_url, layout=layout,
        keywords={key: _plain(primary[key]) for key in OBSERVATION_KEYWORDS if key in primary},
        n_events=layout.n_rows,
        attitude=SimpleNamespace(time=attitude["TIME"], qparam=attitude["QPARAM"].reshape(-1, 4),
                                 flag=attitude["FLAG_ATT"]),
        orbit=SimpleNamespace(time=orbit["TIME"], position=orbit["POSITION"].reshape(-1, 3),
                              flag=orbit["FLAG_PVT"]),
        telemetry_gti=telemetry_gti(gti["START"], gti["STOP"]))


class EventFileStream:
    """ECL-EVT-CAL written as the rows come: header (NAXIS2 patched at the end), rows, GTI."""

    def __init__(self, url, keywords):
        self.url, self.keywords, self.n_rows = url, keywords, 0
        self.tmp = url + ".bare-tmp"
        self.stream = open(self.tmp, "wb")
        self.primary = fits.PrimaryHDU().header
        products.apply_keywords(self.primary, keywords)
        self.stream.write(self.primary.tostring().encode("ascii"))
        self.header_at = self.stream.tell()
        self.stream.write(self._events_header().tostring().encode("ascii"))

    def _events_header(self):
        columns = [fits.Column(name=name, format=tform, array=np.zeros(0, CALIBRATED_DTYPE[name]))
                   for name, tform in EVENT_TFORMS.items()]
        header = fits.BinTableHDU.from_columns(columns, name="EVENTS").header
        header["NAXIS2"] = self.n_rows
        products.apply_keywords(header, self.keywords)
        return header

    def write(self, calibrated):
        self.stream.write(calibrated.astype(ROW_DTYPE).tobytes())
        self.n_rows += len(calibrated)

    def close(self, good_all):
        size = self.n_rows * ROW_DTYPE.itemsize
        self.stream.write(b"\0" * (-size % 2880))
        gti = gti_io.gti_hdu(good_all, "GTI", self.keywords)
        buffer = fits.HDUList([fits.PrimaryHDU(), gti])
        import io
        raw = io.BytesIO()
        buffer.writeto(raw)
        self.stream.write(raw.getvalue()[len(fits.PrimaryHDU().header.tostring()):])
        self.stream.seek(self.header_at)
        self.stream.write(self._events_header().tostring().encode("ascii"))  # same size
        self.stream.close()
        os.replace(self.tmp, self.url)


def run_observation(obs_dir, params, caldb, out_dir, write, watch):
    bube, imag = params.bube, params.imag
    fingerprint = params.fingerprint()
    observation = load_observation(obs_dir)
    pixcal = caldb.pixel_calibration()
    good = good_time(observation)
    timeline = imaging_timeline(
        observation.attitude.time, observation.attitude.qparam, observation.orbit.time,
        observation.orbit.position, good["ALL"], bube.ear_occ_bub, bube.peof_min, bube.peof_max)
    wanted = set(params.wanted_products) if write else set()
    keywords_of = {name: products.standard_keywords(name, observation.keywords, fingerprint)
                   for name in wanted}
    watch.lap("setup: triplet, good time, timeline")

    evt_stream = None
    if "ECL-EVT-CAL" in wanted:
        evt_stream = EventFileStream(products.product_url(out_dir, "ECL-EVT-CAL", observation.obs_id),
                                     keywords_of["ECL-EVT-CAL"])
    bands = [(int(lo), int(hi)) for lo, hi in bube.energy_channels]
    images = {(band, occ): binning.empty_image() for band in bands for occ in bube.ear_occ_bub}
    keyed = binning.keyed_binning(bands)
    tstart, tstop = float(observation.keywords["TSTART"]), float(observation.keywords["TSTOP"])
    previous_time, n_read, n_cal = None, 0, 0
    for first, n_rows in event_io.chunk_ranges(observation.n_events, params.cali.chunk_size):
        events = event_io.read_rows(observation.evt_url, first, n_rows, observation.layout)
        watch.lap("read rows")
        check = consistency.check_event_chunk(events, first, previous_time, tstart, tstop)
        if check.findings:
            raise SystemExit(f"{obs_dir}: DPCO problems in rows {first}..: {check.findings}")
        previous_time = float(events["TIME"][-1]) if len(events) else previous_time
        watch.lap("check chunk (DPCO)")
        calibrated, _ = calibrate_events(events, pixcal, good["ALL"])
        n_read += len(events)
        n_cal += len(calibrated)
        watch.lap("calibrate")
        if evt_stream is not None:
            evt_stream.write(calibrated)
            watch.lap("write ECL-EVT-CAL rows")
        photon = (calibrated["FLAG"] & instrument.FLAG_FORCED_TRIGGER) == 0
        classes = [photon & intervals.mask_times(calibrated["TIME"], timeline.class_gti[occ])
                   for occ in bube.ear_occ_bub]
        binned = binning.keyed_histograms(keyed, calibrated["IDET"], calibrated["JDET"],
                                          calibrated["PI"], classes)
        for occ, by_band in zip(bube.ear_occ_bub, binned):
            for band, image in zip(bands, by_band):
                images[band, occ] = binning.add(images[band, occ], image)
        watch.lap("bin per band x occ")
    if evt_stream is not None:
        evt_stream.close(good["ALL"])
        watch.lap("write ECL-EVT-CAL rows")

    good_pixels = pixcal.status == 0
    efficiency = np.where(good_pixels, pixcal.effic, 0.0)
    corrector = BackgroundCorrector.from_caldb(caldb)  # the same BUBE as the pipeline
    analyser = SkyAnalyser(caldb.mask_pattern(), pixcal, imag,  # the same IMAG as the pipeline
                           irf=caldb.irf(), arf=caldb.arf())
    quaternion = timeline.reference_quaternion
    detector, sky_entries = [], []
    for (band, occ), counts in sorted(images.items()):
        mode = bube.correction_for(occ)
        exposure = timeline.exposure(occ)
        correction = corrector.correct(mode, counts, observation.obs_id, instrument.band_name(band),
                                       occ, timeline,
                                       earth_map="ECL-EAR-OFM" in params.bube.out_files).correction
        name = instrument.band_name(band)
        detector.append((name, occ, SimpleNamespace(
            counts=counts, exposure=exposure, good_pixels=good_pixels, efficiency=efficiency,
            mode=mode, correction=correction)))
        watch.lap("background")
        analysis = analyser.analyse(correction.corrected, correction.variance, good_pixels,
                                    efficiency, mode, band=band,
                                    model_terms=correction.terms)  # as the pipeline
        sky_entries.append((name, occ, SimpleNamespace(
            images=analysis.images, residual_snr=analysis.residual_snr, exposure=exposure,
            wcs_keywords=instrument.sky_wcs_keywords(quaternion),
            sources=source_rows(analysis.detections, quaternion, exposure))))
        watch.lap("detection and cleaning")

    if "ECL-GTI-CAL" in wanted:
        hdus = [gti_io.gti_hdu(good[key], extname, keywords_of["ECL-GTI-CAL"])
                for key, extname in GTI_EXTENSIONS.items()]
        products.write_product(products.product_url(out_dir, "ECL-GTI-CAL", observation.obs_id),
                               hdus, keywords_of["ECL-GTI-CAL"])
    if "ECL-GTI-UBC" in wanted:
        products.write_product(
            products.product_url(out_dir, "ECL-GTI-UBC", observation.obs_id),
            image_products.occultation_gti_hdus(timeline, sorted(timeline.class_gti)),
            keywords_of["ECL-GTI-UBC"])
    order = lambda entry: (entry[1], image_products.parse_band(entry[0]))  # noqa: E731
    for name, entries in (("ECL-DET-IMA", detector), ("ECL-DET-UBC", detector),
                          ("ECL-SKY-IMA", sky_entries), ("ECL-SOP-IMA", sky_entries)):
        if name in wanted:
            hdus = image_products.PRODUCT_BUILDERS[name](sorted(entries, key=order))
            products.write_product(products.product_url(out_dir, name, observation.obs_id), hdus,
                                   keywords_of[name])
    watch.lap("write image products")
    return observation, n_read, n_cal, sky_entries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", help="the parameter file (.ini) given to ecpi_run")
    parser.add_argument("--out", help="products folder (default <working_out>/bare-numpy)")
    parser.add_argument("--no-products", action="store_true", help="write no product")
    args = parser.parse_args(argv)

    watch = Stopwatch()
    watch.seconds["imports"] = watch._last - T0
    params = load_params(args.params)
    caldb = Caldb.open(resolve_caldb_dir(params.general.caldb_dir))
    out_dir = args.out or fs.join(params.general.working_out, "bare-numpy")
    if not args.no_products:
        fs.makedirs(out_dir)
    watch.lap("setup: params, caldb")
    total_read = total_cal = total_sources = 0
    for obs_dir in fs.find_observation_dirs(params.general.working_in):
        observation, n_read, n_cal, sky_entries = run_observation(
            obs_dir, params, caldb, out_dir, not args.no_products, watch)
        total_read += n_read
        total_cal += n_cal
        print(f"{observation.obs_id} ({obs_dir}): {n_read} events read, {n_cal} calibrated")
        print(f"  {'band':<9}{'occ':<5}{'RA':>9}{'Dec':>9}{'SNR':>8}{'err90':>8}")
        for band, occ, sky in sky_entries:
            total_sources += len(sky.sources)
            for src in sky.sources:
                print(f"  {band:<9}{occ:<5}{src.ra:9.3f}{src.dec:9.3f}{src.snr:8.1f}"
                      f"{src.err_rad_arcmin:7.1f}'")
    elapsed = time.perf_counter() - T0
    print(f"bare_numpy_chain: events read {total_read}, calibrated {total_cal}; "
          f"sources {total_sources}; in {elapsed:.1f} s ({total_read / max(elapsed, 1e-9):.3g} events/s)")
    for stage, seconds in sorted(watch.seconds.items(), key=lambda item: -item[1]):
        print(f"  {stage:<36}{seconds:8.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
