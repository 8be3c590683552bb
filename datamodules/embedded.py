"""The photos inside installed packages that the embedded defaults train and validate on, so that
every task runs without a download and the splits are fixed in one place.

* ``skimage/data`` (scikit-image): natural photos, textures and grayscale pictures (read as RGB);
* ``sklearn/datasets/images`` (scikit-learn, ``load_sample_images``): the colour photos
  ``china.jpg`` and ``flower.jpg``.

Super-resolution and inpainting train on :data:`EMBEDDED_TRAIN` and validate (and test) on
:data:`EMBEDDED_VAL`; no photo is in both. The embedded segmentation scenes are drawn on
:data:`SEGMENTATION_BACKGROUNDS` in every split, each split on its own rows of each picture (see
:mod:`datamodules.segmentation_embedded`).
"""

from __future__ import annotations

from pathlib import Path

import skimage
import sklearn.datasets

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
SKLEARN_IMAGES = Path(sklearn.datasets.__file__).parent / "images"

#: Training photos and textures: scikit-image's and the two scikit-learn photos.
EMBEDDED_TRAIN = (
    *(SKIMAGE_DATA / name for name in (
        "astronaut.png", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg",
        "ihc.png", "retina.jpg", "brick.png", "grass.png", "gravel.png", "camera.png",
        "coins.png", "moon.png", "cell.png",
    )),
    SKLEARN_IMAGES / "china.jpg", SKLEARN_IMAGES / "flower.jpg",
)
#: Validation photos (scikit-image), never used for training.
EMBEDDED_VAL = tuple(SKIMAGE_DATA / name for name in ("chelsea.png", "coffee.png", "rocket.jpg"))
#: Backgrounds of the embedded segmentation scenes (scikit-image textures and photos).
SEGMENTATION_BACKGROUNDS = tuple(SKIMAGE_DATA / name for name in (
    "brick.png", "grass.png", "gravel.png", "coffee.png", "astronaut.png", "rocket.jpg",
    "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png", "camera.png", "moon.png",
))
