"""BUBE for one key (obs_id, band, occ), without Beam: the physics context and the fit.

Everything that depends only on the CALDB (good pixels, efficiency, mask, the unocculted sky
template, ARF and RMF) is prepared once; the Earth geometry of an (obs_id, occ) is computed
once and kept for its other bands (it does not depend on the band); the band's CXB and Earth
rates are folded once per band. The Beam transform (transforms/bube.py), the tests and the
background-mode benchmark all call this, so they do the same science.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecpi_beam import instrument
from ecpi_beam.io.image_products import parse_band
from ecpi_beam.kernels import background, earth, folding, imaging

KEPT_GEOMETRIES = 16  # (obs_id, occ) Earth geometries kept: a campaign's recent observations


@dataclass(frozen=True, eq=False)
class KeyBackground:
    exposure: float
    correction: background.BackgroundResult
    earth: earth.EarthTemplates | None  # None when not made (see BackgroundCorrector.correct)


class BackgroundCorrector:
    """Fits a key's background in any mode of kernels/background.py."""

    def __init__(self, pattern, pixel_calibration, arf, rmf, detection=None,
                 smart: bool = False):
        self.good = pixel_calibration.good
        self.efficiency = pixel_calibration.imaging_efficiency
        self.pattern = np.asarray(pattern)
        self.template = background.sky_illumination_template(self.pattern, self.efficiency)
        self._arf, self._rmf = arf, rmf
        self._rates = {}  # band -> (CXB, Earth) counts s-1 cm-2 sr-1
        self._geometry = {}  # (obs_id, occ) -> EarthTemplates
        self.context = {"efficiency": self.efficiency, "mask_pattern": self.pattern}
        if smart:
            self.context["correlation_plan"] = imaging.make_correlation_plan(
                instrument.resample_mask(self.pattern))
        if detection is not None:
            self.context["detection"] = dict(detection)

    @classmethod
    def from_caldb(cls, caldb, detection=None, smart: bool = False) -> "BackgroundCorrector":
        return cls(caldb.mask_pattern(), caldb.pixel_calibration(), caldb.arf(), caldb.rmf(),
                   detection, smart)

    def band_rates(self, band: str) -> tuple[float, float]:
        """(CXB, Earth) predicted counts s-1 cm-2 sr-1 in the band (Moretti, Ajello)."""
        if band not in self._rates:
            self._rates[band] = tuple(
                folding.band_rate_per_area_sr(spectrum, self._arf, self._rmf, parse_band(band))
                for spectrum in (folding.MORETTI_2009_CXB, folding.AJELLO_2008_ALBEDO))
        return self._rates[band]

    def earth_templates(self, obs_id: str, occ: str, timeline) -> earth.EarthTemplates:
        """The key's Earth geometry, kept per (obs_id, occ, good time). A streaming window
        brings its own mean hidden sky, summed over its tiles (transforms/windows.py). A
        timeline without the Earth's track (no orbit samples) has none."""
        window_hidden = getattr(timeline, "hidden_sky", None)
        if window_hidden is not None:
            return earth.templates_from_hidden(self.pattern, window_hidden,
                                               timeline.hidden_seconds)
        class_gti = getattr(timeline, "class_gti", None)
        if class_gti is None or getattr(timeline, "earth_icrs", None) is None:
            return earth.no_earth()
        key = (obs_id, occ, np.asarray(class_gti[occ], dtype=float).tobytes())
        if key not in self._geometry:
            if len(self._geometry) >= KEPT_GEOMETRIES:
                self._geometry.clear()
            self._geometry[key] = earth.earth_templates(self.pattern, timeline, occ)
        return self._geometry[key]

    def correct(self, mode: str, counts, obs_id: str, band: str, occ: str,
                timeline, earth_map: bool = True) -> KeyBackground:
        """The key's background in `mode`. The Earth geometry (a sky map per 3 s of good
        time) is made when the mode predicts the CXB or the Earth, or `earth_map` asks for it
        (ECL-EAR-OFM); otherwise KeyBackground.earth is None."""
        exposure = timeline.exposure(occ)
        context, templates = self.context, None
        if earth_map or mode in background.PHYSICS_MODES:
            templates = self.earth_templates(obs_id, occ, timeline)
            context = {**context, **earth.predicted_background_images(
                self.template, templates, *self.band_rates(band), exposure)}
        correction = background.correct_background(mode, counts, self.good, self.template,
                                                   context)
        return KeyBackground(exposure, correction, templates)
