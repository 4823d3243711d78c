"""ssd_data."""
