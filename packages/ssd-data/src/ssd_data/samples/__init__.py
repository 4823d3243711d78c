"""What both input paths share: the random decisions of one sample (crop, flip, colour jitter),
the one sample loop (attempts, replacement of unreadable images, box dropping and padding) and
the collate into fixed-shape batches. The pixel work is the paths' own: :mod:`ssd_data.host`
(PIL, in the loader workers) and :mod:`ssd_data.device` (tensors, on the training device)."""
