"""Analysis: receptive fields, the r/s sweep, MACs."""
