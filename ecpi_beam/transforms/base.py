"""The base of this package's PTransforms, written as small dataclasses (as in xarray-beam),
and the worker state their DoFns share."""
import threading

import apache_beam as beam


class DataclassTransform(beam.PTransform):
    """A dataclass-made __init__ does not call PTransform's: this does it after.

    Subclasses use `@dataclasses.dataclass(eq=False)`, so that transforms stay hashable by
    identity as Beam expects.
    """

    def __post_init__(self):
        super().__init__()


class SumCombineFn(beam.CombineFn):
    """Adds its inputs with `+` (sums of arrays, as dataclasses with __add__); the accumulator
    is the running sum, None before the first input, so any grouping gives the same total."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, value):
        return value if accumulator is None else accumulator + value

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is not None:
                merged = accumulator if merged is None else merged + accumulator
        return merged

    def extract_output(self, accumulator):
        return accumulator


class GroupByObservation(beam.PTransform):
    """((obs_id, band, occ), value) -> (obs_id, [(band, occ, value), ...])."""

    def expand(self, keyed):
        return grouped_by_observation(keyed)
def with_pointing(key: tuple, pointing: int = 0) -> tuple:
    """A key with the observation's stable pointing appended when it is not the first
    (docs/ARCHITECTURE.md, "Keys"): an observation of one pointing keeps the keys it always
    had, and each key has one form."""
    return tuple(key) + (int(pointing),) if pointing else tuple(key)


def image_key(obs_id, band, occ, pointing: int = 0) -> tuple:
    """The key of one image: (obs_id, band, occ), or (obs_id, band, occ, pointing) for the
    observation's stable pointings after the first."""
    return with_pointing((str(obs_id), str(band), str(occ)), pointing)


def image_key_parts(key) -> tuple:
    """(obs_id, band, occ, pointing) of an image key (pointing 0 when it has no such part);
    also (obs_id, source, occ, pointing) of a SPEX key."""
    return key[0], key[1], key[2], int(key[3]) if len(key) > 3 else 0


def pointing_name(pointing: int) -> str:
    """' P<k>' after an image's band and type in log lines, for pointings after the first."""
    return f" P{pointing}" if pointing else ""


def grouped_by_observation(keyed):
    """((obs_id, band, occ[, pointing]), value) -> (obs_id, [(band, occ, value), ...]): the
    images of one observation together (one product file, one catalogue); each value knows
    its pointing."""
    return (keyed
            | "ByObservation" >> beam.MapTuple(lambda key, value: (key[0], (key[1], key[2], value)))
            | "Group" >> beam.GroupByKey())


_WORKER_STATE: dict = {}
_WORKER_STATE_KEPT = 64


def worker_state(make, *key):
    """`make(*key)`, made once per worker thread and kept across pipelines: the correlation
    plan, templates and rates the DoFns set up from the CALDB are the same for every wave of
    a campaign (each wave is a pipeline, whose DoFns are set up anew). The key's arguments
    must be hashable (a Caldb, frozen parameters); one copy per thread, as Beam gives each
    thread its own DoFn instances."""
    full_key = (threading.get_ident(), make, key)
    state = _WORKER_STATE.get(full_key)
    if state is None:
        if len(_WORKER_STATE) >= _WORKER_STATE_KEPT:
            _WORKER_STATE.clear()
        state = _WORKER_STATE[full_key] = make(*key)
    return state
