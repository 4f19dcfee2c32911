"""The base of this package's PTransforms, written as small dataclasses (as in xarray-beam)."""
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
