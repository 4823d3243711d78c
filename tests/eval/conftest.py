"""Fixtures of tests/eval (helper functions live in ``tests/helpers/coco_reference.py``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def tiny_gt() -> dict[str, Any]:
    """Two images, categories listed out of id order ([7, 3]): label 1 -> 7, label 2 -> 3."""
    return {
        "images": [
            {"id": 10, "height": 100, "width": 200},
            {"id": 20, "height": 50, "width": 50},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 10,
                "category_id": 7,
                "bbox": [20, 10, 40, 30],
                "area": 1200.0,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 20,
                "category_id": 3,
                "bbox": [5, 5, 10, 10],
                "area": 100.0,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
    }
