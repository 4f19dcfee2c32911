"""The base of this package's PTransforms, written as small dataclasses (as in xarray-beam)."""
import apache_beam as beam


class DataclassTransform(beam.PTransform):
    """A dataclass-made __init__ does not call PTransform's: this does it after.

    Subclasses use `@dataclasses.dataclass(eq=False)`, so that transforms stay hashable by
    identity as Beam expects.
    """

    def __post_init__(self):
        super().__init__()


def grouped_by_observation(keyed):
    """((obs_id, band, occ), value) -> (obs_id, [(band, occ, value), ...]): the images of one
    observation together (one product file, one catalogue)."""
    return (keyed
            | "ByObservation" >> beam.MapTuple(lambda key, value: (key[0], (key[1], key[2], value)))
            | "Group" >> beam.GroupByKey())
