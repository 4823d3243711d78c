"""ssd_train."""
