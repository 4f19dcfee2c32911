"""The I/O layer: fsspec file systems and FITS sources and sinks."""
