"""ssd_core."""
