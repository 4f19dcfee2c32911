"""Params + PipelineOptions -> the Beam graph of DPCO, CALI, BUBE and IMAG.

One graph serves one observation or a campaign of thousands: every collection is keyed by
obs_id first, so more observations are just more keys.
"""
from __future__ import annotations

import apache_beam as beam

from ecpi_beam.campaign import products_stamp
from ecpi_beam.io.failures import FailureLog
from ecpi_beam.transforms.base import GroupByObservation
from ecpi_beam.transforms.bube import Bube, ImagingTimelines
from ecpi_beam.transforms.cali import Cali, WriteCaliProducts
from ecpi_beam.transforms.failures import RecordFailures, with_failure_log
from ecpi_beam.transforms.imag import Imag
from ecpi_beam.transforms.read import ReadObservation
from ecpi_beam.transforms.write import (WriteAlerts, WriteImageProducts, WriteRegionFile,
                                        WriteTimelineProducts, failed_obs_ids)

BUBE_PRODUCTS = ("ECL-DET-IMA", "ECL-DET-UBC", "ECL-GTI-UBC", "ECL-EAR-OFM")
IMAG_PRODUCTS = ("ECL-SKY-IMA", "ECL-SOP-IMA")


def build_observation_pipeline(pipeline, params, caldb_dir: str, observation_dirs,
                               progress=None, *, mosaic_sources=None, stamp: str | None = None,
                               spex_keywords=None):
    """Add the whole chain to `pipeline`; returns the dict of named output collections.
    `progress`: io.progress.ProgressMarks for ecpi_run's progress line, or None.

    The campaign's mosaic is made after every observation's pipeline (pipelines/mosaic.py):
    here each observation stores its accumulator (ECL-MOS-ACC). With [spex] sources = mosaic,
    SPEX runs then, in a pipeline of its own given the mosaic's sources (`mosaic_sources`:
    [((band, occ), [SourceRow])]), the products `stamp` of the run and `spex_keywords`.
    """
    general = params.general
    # one failing observation stops no other; the same DoFns mark their progress
    failure_log = FailureLog(general.working_out, progress)
    written = []  # URLs of every writer: joined at the end (see below)
    # PARHASH and CALDBHSH (campaign resume)
    fingerprint = stamp or products_stamp(params, caldb_dir)
    # SPEX: on the sources IMAG finds, a list, or the mosaic's (once the mosaic is made)
    wants_spex = bool(params.spex.out_files) and (not params.spex_from_mosaic
                                                  or mosaic_sources is not None)
    spex_from = params.spex.sources_from if wants_spex else None
    wants_mosa = params.wants_mosaic and mosaic_sources is None
    wants_imag = bool(params.imag.out_files) or wants_mosa or spex_from == "imag"
    wants_detector = bool(params.bube.out_files) or wants_imag  # SPEX alone: good time only
    # the imaging timelines are made where the chunks are described: the chunks carry their
    # occultation classes, so that binning fuses with reading (transforms/read.py)
    wants_timelines = wants_detector or wants_spex
    read = (pipeline
            | "ObservationDirs" >> beam.Create(list(observation_dirs))
            | "Read" >> ReadObservation(
                chunk_size=params.cali.chunk_size, failure_log=failure_log,
                timelines=ImagingTimelines(params.bube, failure_log) if wants_timelines else None))
    observations = read.observations
    failed = failed_obs_ids(read.failures)  # one side input shared by every writer
    calibrated = read.chunks | "Cali" >> Cali(caldb_dir, failure_log)
    outputs = {"observations": observations, "calibrated": calibrated}

    if params.cali.out_files:
        written.append(calibrated | "WriteCali" >> WriteCaliProducts(
            general.working_out, params.cali.out_files, fingerprint, observations, failed,
            failure_log=failure_log))

    if wants_timelines:
        timelines = read.timelines
        outputs["timelines"] = timelines
        if wants_detector:
            detector = calibrated | "Bube" >> Bube(params.bube, caldb_dir, timelines,
                                                   failure_log, imag_params=params.imag)
            outputs["detector"] = detector
        write = dict(working_out=general.working_out, fingerprint=fingerprint,
                     observations=observations, failed=failed, failure_log=failure_log)
        if "ECL-GTI-UBC" in params.bube.out_files:
            written.append(timelines | "WriteGtiUbc" >> WriteTimelineProducts("ECL-GTI-UBC", **write))
        detector_products = [product for product in ("ECL-DET-IMA", "ECL-DET-UBC", "ECL-EAR-OFM")
                             if product in params.bube.out_files]
        if detector_products or wants_imag:  # grouped once, for their writers and IMAG
            detector_by_observation = detector | "DetectorByObservation" >> GroupByObservation()
        for product in detector_products:
            written.append(detector_by_observation | f"Write{product}" >> WriteImageProducts(
                product, **write, grouped=True))
        if wants_imag:
            imag = Imag(params.imag, caldb_dir, timelines, failure_log, grouped=True)
            sky = detector_by_observation | "Imag" >> imag
            outputs["sky"] = sky
            for product in params.imag.out_files:
                written.append(imag.by_observation | f"Write{product}" >> WriteImageProducts(
                    product, **write, grouped=True))
                if product == "ECL-SOP-IMA":  # its DS9 region file beside it (io/regions.py)
                    written.append(written[-1] | "WriteRegions" >> beam.ParDo(
                        with_failure_log(WriteRegionFile(), failure_log)))
            if "ECL-SOP-IMA" in params.imag.out_files:  # a VOEvent per NEW source beside it
                written.append(imag.by_observation | "WriteAlerts" >> WriteAlerts(
                    "ECL-ALERT", **write, grouped=True))
            if wants_mosa:  # MOSA: what this observation adds to the campaign's mosaic
                # imported when asked: astropy.coordinates and healpix cost start-up time
                from ecpi_beam.transforms.mosa import ACCUMULATOR, WriteMosaicInputs

                written.append(imag.by_observation | "WriteMosAcc" >> WriteMosaicInputs(
                    ACCUMULATOR, **write, grouped=True))
        if wants_spex:
            # imported when asked: through the CALDB generator it pulls in scipy.signal/stats
            from ecpi_beam.transforms.spex import Spex

            found = (pipeline | "MosaicSources" >> beam.Create(list(mosaic_sources))
                     if spex_from == "mosaic" else None)
            written.append(calibrated | "Spex" >> Spex(
                params.spex, params.bube, caldb_dir, timelines, outputs.get("sky"), observations,
                failed, general.working_out, fingerprint, failure_log, found,
                extra_keywords=spex_keywords))

    written.append(read.failures | "RecordFailures" >> RecordFailures(general.working_out))
    outputs["failures"] = read.failures
    # One last transform downstream of every writer: the DaskRunner computes only the graph
    # behind the last transform applied, so the writers must all lead to it.
    outputs["written"] = tuple(written) | "AllWritten" >> beam.Flatten()
    return outputs
