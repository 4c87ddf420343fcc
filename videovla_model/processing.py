"""Camera image preparation shared by training and inference (numpy + OpenCV, no torch).

The rule: centre-crop the image to the model's aspect ratio (cutting the longer side equally on both
ends), then resize to the model's (height, width) with area interpolation when shrinking and bilinear
interpolation when enlarging. Training data goes through the same function, so a policy sees at run time
exactly what it was trained on.
"""

from __future__ import annotations

import cv2
import numpy as np


def center_crop_to_aspect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred crop of `image` (H, W, C) with aspect ratio width / height."""
    source_height, source_width = image.shape[:2]
    target_aspect = width / height
    if source_width / source_height > target_aspect:
        crop_width = max(1, round(source_height * target_aspect))
        left = (source_width - crop_width) // 2
        return image[:, left : left + crop_width]
    crop_height = max(1, round(source_width / target_aspect))
    top = (source_height - crop_height) // 2
    return image[top : top + crop_height, :]


def prepare_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any size -> (size[0], size[1], 3) uint8 RGB, by the rule in the module doc."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    height, width = size
    cropped = center_crop_to_aspect(image, height, width)
    if cropped.shape[:2] == (height, width):
        return np.ascontiguousarray(cropped)
    shrinking = cropped.shape[0] > height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(cropped), (width, height), interpolation=interpolation)


def to_model_range(image: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 -1..1 (the VAE's input range), same shape."""
    return image.astype(np.float32) / 127.5 - 1.0


def from_model_range(image: np.ndarray) -> np.ndarray:
    """float -1..1 -> uint8 0..255 (clipped), same shape."""
    return np.clip((image + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
