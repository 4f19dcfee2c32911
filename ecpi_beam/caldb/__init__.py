"""Calibration database (ICD section 3): manifest, reader, shipped default set, `caldb_init`.

    caldb = Caldb.open(location)   # local directory or fsspec URL holding caldb.json
    caldb.mask_pattern(); caldb.pixel_calibration(); caldb.rmf(); caldb.arf(); caldb.irf(); caldb.known_sources()
"""
from ecpi_beam.caldb.manifest import MANIFEST_NAME, REQUIRED_PRODUCTS, ManifestEntry
from ecpi_beam.caldb.reader import Caldb, default_caldb_dir
from ecpi_beam.caldb.tables import (STATUS_DEAD, STATUS_GOOD, STATUS_NOISY, Arf, Irf,
                                    KnownSources, PixelCalibration, Rmf)

__all__ = ["Caldb", "default_caldb_dir", "PixelCalibration", "Rmf", "Arf", "Irf", "KnownSources",
           "ManifestEntry",
           "MANIFEST_NAME", "REQUIRED_PRODUCTS", "STATUS_GOOD", "STATUS_NOISY", "STATUS_DEAD"]
