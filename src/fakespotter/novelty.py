"""The novelty signal: how far a face's features are from the faces a model knows, and the
distance above which its row gets a warning.

The reference faces' standardized features are summarized by their top principal components
and the spread along each; a face's novelty is its Mahalanobis distance in them (root mean
square of its standardized projections). The limit is chosen on held-out faces
(``training.novelty_threshold``: a high percentile of held-out real faces'), and recorded
with where it was chosen (``info_``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

NOVELTY_COMPONENTS = 50  # principal components of the novelty signal


class NoveltyModel(BaseEstimator):
    """Args: ``n_components`` (principal components kept at most), ``random_state`` (the
    randomized SVD's seed). ``Z`` is always standardized features (the classifier's scaler).

    Attributes: ``components_`` (k x D, float32) and ``scale_`` (k, the spread along each)
    after ``fit``; ``limit_`` and ``info_`` after ``set_limit``.
    """

    def __init__(self, n_components=NOVELTY_COMPONENTS, random_state=0):
        self.n_components = n_components
        self.random_state = random_state

    @classmethod
    def fitted(cls, components, scale, limit: float, info: dict | None = None) -> NoveltyModel:
        """A signal with these components, spreads and limit (a model file's)."""
        model = cls()
        model.components_ = np.asarray(components)
        model.scale_ = np.asarray(scale)
        return model.set_limit(limit, info)

    def fit(self, Z, y=None) -> NoveltyModel:
        from sklearn.utils.extmath import randomized_svd

        Z = np.asarray(Z, dtype=np.float32)
        k = int(min(self.n_components, Z.shape[0] - 1, Z.shape[1]))
        _, sigma, components = randomized_svd(Z, k, random_state=self.random_state)
        scale = sigma / np.sqrt(max(1, len(Z) - 1))
        keep = scale > 1e-6 * scale.max()
        self.components_ = components[keep].astype(np.float32)
        self.scale_ = scale[keep].astype(np.float64)
        self.__dict__.pop("limit_", None)  # a limit belongs to the components it was chosen for
        self.__dict__.pop("info_", None)
        return self

    def set_limit(self, limit: float, info: dict | None = None) -> NoveltyModel:
        """The distance above which a face is flagged, and where it was chosen."""
        self.limit_ = float(limit)
        self.info_ = dict(info or {})
        return self

    def distance(self, Z) -> np.ndarray:
        """Each face's distance from the reference faces."""
        check_is_fitted(self, "components_")
        Z = np.asarray(Z, dtype=np.float32)
        # torch's product, on the network's own threads: numpy's OpenBLAS threads, woken right
        # after a forward pass, were at times hundreds of times slower for this product on 2
        # cores (issue #29, docs/speed.md)
        with torch.inference_mode():
            product = torch.from_numpy(Z) @ torch.from_numpy(np.asarray(self.components_)).T
        projected = product.numpy() / self.scale_
        return np.sqrt((projected.astype(np.float64) ** 2).mean(axis=1))

    def warnings(self, distance) -> list[str | None]:
        """The row warning of each distance: None where the face is like the reference faces
        (or no limit was chosen)."""
        limit = getattr(self, "limit_", None)
        if limit is None:
            return [None] * len(distance)
        return [
            f"unlike the faces the model was trained on (novelty {v:.2f} > {limit:.2f}): "
            "read its score with care"
            if v > limit
            else None
            for v in distance
        ]
