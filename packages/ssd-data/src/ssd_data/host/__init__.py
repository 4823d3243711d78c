"""The CPU input path: decode with PIL and apply the MLPerf augmentation in the loader workers,
handing over finished pixels (the decisions come from :mod:`ssd_data.samples`)."""
