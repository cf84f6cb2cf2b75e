"""scikit-learn's bundled 1,797 real 8x8 handwritten digits: a retrieval set that needs no download.

Class-disjoint like the benchmarks: digits 0-4 train, 5-9 test.
"""

from __future__ import annotations

from autolr.data import DataBundle
from autolr.data.build import make_split
from autolr.errors import AutolrError


def load_digits() -> DataBundle:
    import numpy as np
    from PIL import Image

    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise AutolrError("data.name = 'digits' needs scikit-learn: pip install 'autolr[demo]'") from None
    raw = sk_digits()
    pixels = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 grey levels -> 0..255

    def split(classes: range):
        keep = np.isin(raw.target, list(classes))
        images = [Image.fromarray(p) for p in pixels[keep]]  # uint8 2-D arrays are greyscale ("L")
        labels = [int(t) - classes.start for t in raw.target[keep]]
        return make_split(images, labels, [str(c) for c in classes])

    return DataBundle(name="digits", train=split(range(0, 5)), test=split(range(5, 10)), source="scikit-learn")
