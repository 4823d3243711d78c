"""``ssd-data bench``: throughput of the input pipelines against a plain reference, side by side."""
