"""The operating point: the P(fake) at which a face is labelled fake, the band below it labelled
uncertain, and where they were chosen. One frozen value that every output labels with
(``label`` applies ``rows.label_for``); chosen by ``choose_operating_point`` on held-out
photos, stored in the model file under ``operating_point``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fakespotter.rows import FAKE_THRESHOLD, label_for, uncertain_band

# the keys of the model file's record that are fields here; every other key is kept in
# ``record`` (rates on the held-out photos, the rule's limits, per-source results, ...)
_FIELDS = ("threshold", "uncertain", "chosen_on", "chosen_by")


@dataclass(frozen=True)
class OperatingPoint:
    """``threshold``: P(fake) at or above which a face is "fake"; ``uncertain_from``: the low
    end of the band [uncertain_from, threshold) labelled "uncertain" (None: no band; the label
    rule widens it down to 0.5 in any case, ``rows.uncertain_band``); ``chosen_on`` and
    ``chosen_by``: the photos and the command that chose it (None: not chosen, e.g. the plain
    0.5 of a model trained without held-out photos); ``record``: what was measured there."""

    threshold: float = FAKE_THRESHOLD
    uncertain_from: float | None = None
    chosen_on: str | None = None
    chosen_by: str | None = None
    record: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.threshold
        if not (finite_number(t) and 0 <= t <= 1):
            raise ValueError("the operating threshold must be a number in [0, 1]")
        low = self.uncertain_from
        if low is not None and not (finite_number(low) and 0 <= low <= t):
            raise ValueError("the uncertain band must start in [0, threshold]")

    @property
    def uncertain(self) -> tuple[float, float] | None:
        """The stored band (uncertain_from, threshold), or None."""
        return None if self.uncertain_from is None else (self.uncertain_from, self.threshold)

    @property
    def band(self) -> tuple[float, float] | None:
        """The scores labelled uncertain, as every output applies it (``rows.uncertain_band``)."""
        return uncertain_band(self.threshold, self.uncertain_from)

    def label(self, p_fake: float) -> str | None:
        """ "fake", "uncertain" or "real"; None for a score that is not finite (no label)."""
        if not np.isfinite(p_fake):
            return None
        return label_for(float(p_fake), self.threshold, self.uncertain_from)

    def labels(self, p_fake) -> list[str | None]:
        return [self.label(p) for p in np.asarray(p_fake, dtype=np.float64)]

    def is_fake(self, p_fake) -> np.ndarray:
        """1 where P(fake) reaches the threshold, else 0."""
        return (np.asarray(p_fake) >= self.threshold).astype(int)

    @classmethod
    def cutoff(cls, threshold: float) -> OperatingPoint:
        """A plain cut-off given by a user (``detect --threshold``): no band, chosen nowhere."""
        return cls(float(threshold), None, chosen_by="--threshold")

    def chosen(self, chosen_on: str | None, chosen_by: str | None, **record) -> OperatingPoint:
        """The same point, saying where it was chosen (and adding to its record)."""
        return replace(
            self, chosen_on=chosen_on, chosen_by=chosen_by, record={**self.record, **record}
        )

    def to_record(self) -> dict:
        """The model file's ``operating_point`` metadata."""
        where = {"chosen_on": self.chosen_on, "chosen_by": self.chosen_by}
        return {
            **self.record,
            **{k: v for k, v in where.items() if v is not None},  # None: not recorded
            "threshold": float(self.threshold),
            "uncertain": None if self.uncertain is None else [float(v) for v in self.uncertain],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> OperatingPoint:
        """The point a model file stores (None: a file from before operating points, the plain
        0.5 cut-off); ValueError for one that is not valid."""
        if record is None:
            return cls()
        threshold, band = record.get("threshold"), record.get("uncertain")
        if not (finite_number(threshold) and 0 <= float(threshold) <= 1):  # type: ignore[arg-type]
            raise ValueError("operating threshold must be a number in [0, 1]")
        t = float(threshold)  # type: ignore[arg-type]  # a finite number, checked above
        if band is not None and not (
            isinstance(band, list)
            and len(band) == 2
            and all(finite_number(v) for v in band)
            and 0 <= band[0] <= band[1] == t
        ):
            raise ValueError("uncertain band must be [low, threshold]")
        on, by = record.get("chosen_on"), record.get("chosen_by")
        return cls(
            t,
            None if band is None else float(band[0]),
            chosen_on=on if isinstance(on, str) else None,
            chosen_by=by if isinstance(by, str) else None,
            record={k: v for k, v in record.items() if k not in _FIELDS},
        )


def finite_number(value) -> bool:
    """A real int or float that is finite (not a bool, not a string): how model-file values
    are checked."""
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
    )


# The operating point's defaults (docs/shipped_model.md, "Reading the labels").
MAX_FALSE_ALARM = 0.01  # at most this share of held-out real photos is labelled fake
MAX_MISSED = 0.05  # at most this share of held-out fakes is labelled real; between: uncertain


def choose_operating_point(
    p_fake, labels, *, max_false_alarm: float = MAX_FALSE_ALARM, max_missed: float = MAX_MISSED
) -> dict:
    """The threshold and uncertain band, chosen on held-out photos (never the test split).

    * ``threshold``: the lowest P(fake) at which at most ``max_false_alarm`` of the real
      photos would be labelled fake;
    * ``uncertain``: [low, threshold), with ``low`` the highest P(fake) below which at most
      ``max_missed`` of the fakes fall (labelled real); None when that is not below the
      threshold. Photos scoring in the band are labelled "uncertain".

    Returns the two and the rates they give on these photos.
    """
    p, y = np.asarray(p_fake, dtype=np.float64), np.asarray(labels)
    real, fake = np.sort(p[y == 0]), np.sort(p[y == 1])
    if not len(real) or not len(fake):
        raise ValueError("choosing an operating point needs real and fake photos")
    # at most floor(a * n) reals may reach the threshold: just above the next one down
    allowed = int(np.floor(max_false_alarm * len(real)))
    threshold = (
        float(np.nextafter(real[len(real) - allowed - 1], np.inf)) if allowed < len(real) else 0.0
    )
    threshold = min(max(threshold, 0.0), 1.0)
    missed = int(np.floor(max_missed * len(fake)))  # this many fakes may fall below `low`
    low = float(fake[missed]) if missed < len(fake) else threshold
    band = [low, threshold] if low < threshold else None
    lab = np.array(OperatingPoint(threshold, None if band is None else low).labels(p))
    rates = {
        f"{name}_{what}": float(np.mean(lab[y == cls] == what))
        for cls, name in ((0, "real"), (1, "fake"))
        for what in ("fake", "uncertain", "real")
    }
    return {
        "threshold": threshold,
        "uncertain": band,
        "max_false_alarm": max_false_alarm,
        "max_missed": max_missed,
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
        **rates,
    }
