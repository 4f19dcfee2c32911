"""The base of this package's PTransforms, written as small dataclasses (as in xarray-beam)."""
import apache_beam as beam


class DataclassTransform(beam.PTransform):
    """A dataclass-made __init__ does not call PTransform's: this does it after.

    Subclasses use `@dataclasses.dataclass(eq=False)`, so that transforms stay hashable by
    identity as Beam expects.
    """

    def __post_init__(self):
        super().__init__()
