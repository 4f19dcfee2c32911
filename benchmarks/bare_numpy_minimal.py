"""The minimal bare-numpy chain: the speed floor of `ecpi_run`, written without the project.

    python benchmarks/bare_numpy_minimal.py OBS_DIR [OBS_DIR ...] CALDB_DIR
        [--chunk-size 1000000] [--bands 13-60,61-140,...] [--snr 7]

Nothing of ecpi_beam is imported: numpy, scipy.fft and astropy.io.fits only, so that slow
project kernels cannot hide in the floor. What it does, one process:
  - the EVENTS table of the ECL-EVT-SEC file read in chunks through a numpy memmap of its rows
    (offset and row layout from the astropy header), the GTI extension as the good time;
  - per chunk: events outside the GTI, on dead/noisy pixels (CALDB ECL-PIX-CAL STATUS) or forced
    triggers (FLAG bit 1) dropped, PI from the per-pixel GAIN and OFFSET, and the five bands
    binned by ONE bincount over a combined (band, pixel) index;
  - per band: one balanced cross-correlation (Goldwurm et al. 2003) by real FFTs of size 200
    with the kernel FFTs and the balance terms computed once, intensity and variance, SNR;
    then a peak search (local maxima of the SNR above --snr).
Given several observation directories (a campaign), it loops over them in the same process:
the CALDB tables and the FFT plan are made once, each observation's events are opened, binned,
imaged and searched in turn (the floor of a campaign's `ecpi_run`).
It prints the peaks per band and the seconds of each stage; the last line is a summary with
`events read N` and the event-path rate, which benchmarks/bench_chain.py parses.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from scipy import fft  # noqa: E402

N_PIX, N_MASK, N_CELLS, FFT_SIZE = 80, 46, 120, 200
N_SKY = N_PIX + N_CELLS - 1
MASK_WIDTH_MM, PITCH_MM = 540.0, 4.5
FORCED_TRIGGER = 0x02
PI_E0, PI_WIDTH, N_PI = 2.0, 0.1, 1500
DEFAULT_BANDS = "13-60,61-140,141-300,301-620,621-1260"


def resampled_mask(pattern):
    """Open fraction of each 4.5 mm cell of the 540 mm mask plane (120 x 120), exact overlap."""
    centres = (np.arange(N_CELLS) - (N_CELLS - 1) / 2.0) * PITCH_MM
    element = MASK_WIDTH_MM / N_MASK
    lo_edges = -MASK_WIDTH_MM / 2.0 + element * np.arange(N_MASK)
    lo = np.maximum(centres[:, None] - PITCH_MM / 2, lo_edges[None, :])
    hi = np.minimum(centres[:, None] + PITCH_MM / 2, lo_edges[None, :] + element)
    overlap = np.clip(hi - lo, 0.0, None) / PITCH_MM
    return overlap @ np.asarray(pattern, float) @ overlap.T


class Correlator:
    """FFT cross-correlation, kernels prepared once: sky[r, c] = sum D[i, j] G[i+r-79, j+c-79]."""

    def __init__(self, mask, weights):
        shift = N_PIX - 1
        # the kernels are rolled so that the inverse FFT is already on the sky grid
        def kernel(array):
            return fft.rfft2(np.roll(np.pad(array, ((0, FFT_SIZE - N_CELLS),) * 2),
                                     (shift, shift), axis=(0, 1)))
        self.k_pos, self.k_neg = kernel(mask), kernel(1.0 - mask)
        self.k_pos2, self.k_neg2 = kernel(mask ** 2), kernel((1.0 - mask) ** 2)
        self.k_cross, self.k_aperture = kernel(mask * (1.0 - mask)), kernel(np.ones_like(mask))
        self.weights = weights
        w = self._forward(weights)
        w_pos, w_neg = self._inverse(w * self.k_pos), self._inverse(w * self.k_neg)
        w_pos2, w_cross = self._inverse(w * self.k_pos2), self._inverse(w * self.k_cross)
        pcode = self._inverse(w * self.k_aperture) / weights.sum()
        tiny = 1e-9 * weights.sum()
        self.measured = (pcode >= 1e-3) & (w_neg > tiny)
        self.b = np.where(self.measured, w_pos / np.where(self.measured, w_neg, 1.0), 0.0)
        norm = w_pos2 - self.b * w_cross
        self.measured &= norm > tiny
        self.norm = np.where(self.measured, norm, 1.0)

    @staticmethod
    def _forward(detector):
        return np.conj(fft.rfft2(detector, s=(FFT_SIZE, FFT_SIZE)))

    @staticmethod
    def _inverse(product):
        return fft.irfft2(product, s=(FFT_SIZE, FFT_SIZE))[:N_SKY, :N_SKY]

    def snr(self, counts):
        """Balanced intensity / sqrt(variance), Poisson variance of the counts."""
        d = self._forward(self.weights * counts)
        v = self._forward(self.weights ** 2 * counts)
        intensity = (self._inverse(d * self.k_pos)
                     - self.b * self._inverse(d * self.k_neg)) / self.norm
        variance = (self._inverse(v * self.k_pos2) - 2.0 * self.b * self._inverse(v * self.k_cross)
                    + self.b ** 2 * self._inverse(v * self.k_neg2)) / self.norm ** 2
        ok = self.measured & (variance > 1e-12 * max(float(variance.max()), 1e-300))
        return np.where(ok, intensity / np.sqrt(np.where(ok, variance, 1.0)), 0.0)


def peaks(snr, threshold):
    """(row, col, snr) of the local maxima of the SNR above the threshold, brightest first."""
    padded = np.pad(snr, 1, constant_values=-np.inf)
    core = padded[1:-1, 1:-1]
    is_peak = core > threshold
    for d_row in (-1, 0, 1):
        for d_col in (-1, 0, 1):
            if d_row or d_col:
                is_peak &= core >= padded[1 + d_row:N_SKY + 1 + d_row, 1 + d_col:N_SKY + 1 + d_col]
    rows, cols = np.nonzero(is_peak)
    order = np.argsort(-snr[rows, cols])
    return [(int(r), int(c), float(snr[r, c])) for r, c in zip(rows[order], cols[order])]


def pixel_tables(caldb_dir):
    """(6400,) gain, offset and 'usable' (STATUS 0) per pixel index IDET * 80 + JDET; (80, 80)
    efficiency; (46, 46) mask pattern."""
    with fits.open(glob.glob(os.path.join(caldb_dir, "ECL-PIX-CAL*"))[0]) as hdus:
        table = hdus["PIXEL_CAL"].data
        index = table["IDET"].astype(int) * N_PIX + table["JDET"].astype(int)
        gain, offset = np.zeros(N_PIX * N_PIX), np.zeros(N_PIX * N_PIX)
        usable, effic = np.zeros(N_PIX * N_PIX, bool), np.zeros(N_PIX * N_PIX)
        gain[index], offset[index] = table["GAIN"], table["OFFSET"]
        usable[index], effic[index] = table["STATUS"] == 0, table["EFFIC"]
    with fits.open(glob.glob(os.path.join(caldb_dir, "ECL-MSK-PAT*"))[0]) as hdus:
        pattern = np.asarray(hdus[0].data, float)
    return gain, offset, usable, effic.reshape(N_PIX, N_PIX), pattern


def open_events(obs_dir):
    """(rows, gti): the EVENTS rows of the ECL-EVT-SEC file as a read-only memmap (big-endian
    FITS layout from the astropy header) and its GTI as sorted (n, 2) intervals."""
    evt = glob.glob(os.path.join(obs_dir, "ECL-EVT-SEC*"))[0]
    with fits.open(evt) as hdus:
        header, data_offset = hdus["EVENTS"].header, hdus.fileinfo(1)["datLoc"]
        gti = np.array([hdus["GTI"].data["START"], hdus["GTI"].data["STOP"]], float).T
    names = [header[f"TTYPE{k}"].strip() for k in range(1, header["TFIELDS"] + 1)]
    forms = {"D": ">f8", "B": "u1", "I": ">i2", "J": ">i4", "E": ">f4"}
    row_dtype = np.dtype([(name, forms[header[f"TFORM{k + 1}"].strip()[-1]])
                          for k, name in enumerate(names)])
    rows = np.memmap(evt, dtype=row_dtype, mode="r", offset=data_offset,
                     shape=(int(header["NAXIS2"]),))
    return rows, gti[np.argsort(gti[:, 0])]


def band_lookup(bands):
    """(N_PI,) band index of each PI channel; len(bands) for channels in no band."""
    band_of_pi = np.full(N_PI, len(bands), np.intp)
    for k, (lo, hi) in enumerate(bands):
        band_of_pi[lo:hi + 1] = k  # the minimal chain takes non-overlapping bands
    return band_of_pi


def bin_events(rows, gti, gain, offset, usable, band_of_pi, chunk):
    """((n_bands + 1) * 6400,) counts per (band, pixel) and the number of events binned: the
    whole event path (read, good time, pixel status, PI, one bincount) chunk by chunk."""
    n_pixels = N_PIX * N_PIX
    counts = np.zeros((band_of_pi.max() + 1) * n_pixels, np.int64)
    n_kept = 0
    for first in range(0, len(rows), chunk):
        block = rows[first:first + chunk]
        times = block["TIME"].astype(np.float64)
        pixel = block["IDET"].astype(np.intp) * N_PIX + block["JDET"]
        in_gti = np.searchsorted(gti[:, 0], times, side="right") - 1
        in_gti = (in_gti >= 0) & (times < gti[np.maximum(in_gti, 0), 1])
        keep = in_gti & usable[pixel] & ((block["FLAG"] & FORCED_TRIGGER) == 0)
        pixel = pixel[keep]
        energy = gain[pixel] * block["PHA"][keep] + offset[pixel]
        pi = np.clip(np.floor((energy - PI_E0) / PI_WIDTH + 1e-9), 0, N_PI - 1).astype(np.intp)
        counts += np.bincount(band_of_pi[pi] * n_pixels + pixel, minlength=counts.size)
        n_kept += int(keep.sum())
    return counts, n_kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("obs_dirs", nargs="+", metavar="obs_dir",
                        help="folder(s) holding the ECL-EVT-SEC file, looped over in turn")
    parser.add_argument("caldb_dir", help="CALDB folder (ECL-PIX-CAL, ECL-MSK-PAT)")
    parser.add_argument("--chunk-size", type=float, default=1e6)
    parser.add_argument("--bands", default=DEFAULT_BANDS, help="PI bands lo-hi, comma separated")
    parser.add_argument("--snr", type=float, default=7.0, help="peak threshold")
    args = parser.parse_args(argv)
    seconds = {"imports": time.perf_counter() - T0}
    lap = [time.perf_counter()]

    def stage(name):
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - lap[0]
        lap[0] = now

    bands = [tuple(int(x) for x in band.split("-")) for band in args.bands.split(",")]
    band_of_pi = band_lookup(bands)
    gain, offset, usable, effic, pattern = pixel_tables(args.caldb_dir)
    correlator = Correlator(resampled_mask(pattern),
                            np.where(usable.reshape(N_PIX, N_PIX), effic, 0.0))
    stage("setup (CALDB, FFT plan)")

    n_read = n_binned = n_peaks = 0
    event_seconds = 0.0
    for obs_dir in args.obs_dirs:
        rows, gti = open_events(obs_dir)
        stage("headers (astropy)")
        event_path = time.perf_counter()
        counts, n_kept = bin_events(rows, gti, gain, offset, usable, band_of_pi,
                                    int(args.chunk_size))
        event_seconds += time.perf_counter() - event_path
        stage("event path (read, PI, bin)")
        images = counts.reshape(len(bands) + 1, N_PIX, N_PIX)[:len(bands)].astype(float)
        found = [((lo, hi), peaks(correlator.snr(image), args.snr))
                 for (lo, hi), image in zip(bands, images)]
        stage("imaging and peaks")
        print(obs_dir)
        for (lo, hi), band_peaks in found:
            described = ", ".join(f"({r},{c}) {s:.1f}" for r, c, s in band_peaks[:5])
            print(f"  {lo}-{hi}: {len(band_peaks)} peaks above {args.snr}: {described}")
        n_read, n_binned = n_read + len(rows), n_binned + n_kept
        n_peaks += sum(len(p) for _, p in found)
        del rows  # the memmap closed before the next observation's
    elapsed = time.perf_counter() - T0
    for name, value in seconds.items():
        print(f"  {name:<36}{value:8.3f} s")
    print(f"bare_numpy_minimal: events read {n_read}, binned {n_binned}; "
          f"observations {len(args.obs_dirs)}; peaks {n_peaks}; in {elapsed:.2f} s; "
          f"event path {n_read / max(event_seconds, 1e-9):.3g} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
