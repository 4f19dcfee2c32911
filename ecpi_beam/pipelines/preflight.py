"""Checks made before the graph starts, so a user mistake is one line and no product is written."""
from __future__ import annotations

from ecpi_beam.errors import EcpiError
from ecpi_beam.kernels import background, imaging

# Products of the next BUBE stage (ROADMAP stage 4): named by the seed, not made yet.
NOT_YET_AVAILABLE = {"ECL-EAR-OFM": "the Earth occultation fraction map comes with the next BUBE stage"}


def check_capabilities(params):
    """Every requested product, background mode and IRF correction must exist in this version."""
    for product in params.bube.out_files:
        if product in NOT_YET_AVAILABLE:
            raise EcpiError(f"[bube] out_files: '{product}' is not available yet "
                            f"({NOT_YET_AVAILABLE[product]})")
    if not (params.bube.out_files or params.imag.out_files or params.mosa.out_files
            or params.spex.out_files):
        return
    available = background.available_modes()
    for occ in params.bube.ear_occ_bub:
        mode = params.bube.correction_for(occ)
        if mode not in available:
            raise EcpiError(f"[bube] bkg_cor_mod = '{mode}' (for {occ}) is not available yet; "
                            f"available: {', '.join(available)}")
    if params.imag.out_files:
        imaging.irf_correction(params.imag.irf_corr)  # raises the one-line error


def preflight_observations(observation_dirs):
    """A single observation is fully checked (DPCO) here; a campaign reports failures per run."""
    from ecpi_beam.transforms.read import inspect_observation

    if not observation_dirs:
        raise EcpiError("[general] working_in: no observation directory found")
    if len(observation_dirs) == 1:
        inspect_observation(observation_dirs[0])
