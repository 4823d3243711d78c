"""ssd_eval."""
