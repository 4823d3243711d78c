"""The synthetic COCO-format dataset: shapes drawn on textured backgrounds at four difficulties,
written as JPEG files and COCO json, for tests and for the default job on any machine."""
