"""Data preparation: importers, landmarks, alignment, the HDF5 face cache, benchmarks and backgrounds."""
