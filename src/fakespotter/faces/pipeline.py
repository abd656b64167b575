"""From a decoded photo to aligned face crops for one backbone's convention."""

from __future__ import annotations

from fakespotter.weights import DistributionSource, UrlSource, WeightFile

_MTCNN_URL = "https://github.com/timesler/facenet-pytorch/raw/master/data/"


def _mtcnn_file(stage: str, sha256: str, size: int) -> WeightFile:
    return WeightFile(
        name="mtcnn",
        filename=f"{stage}.pt",
        sha256=sha256,
        size=size,
        licence="MIT (facenet-pytorch port of the MTCNN weights by Zhang et al.)",
        sources=(DistributionSource("facenet-pytorch==2.6.0", f"facenet_pytorch/data/{stage}.pt"),
                 UrlSource(_MTCNN_URL + f"{stage}.pt")),
    )


DETECTOR_WEIGHTS = (
    _mtcnn_file("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", 28_570),
    _mtcnn_file("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", 403_147),
    _mtcnn_file("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", 1_559_269),
)
