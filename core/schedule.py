"""Which denoising steps an intervention acts on.

Users give a start and end percent of the denoising; the node converts them to sigmas once, with the
model's own `model_sampling.percent_to_sigma`, and during sampling each model call is gated on its sigma.
Counting steps instead would break under KSamplerAdvanced or Wan 2.2's two experts, which each see a slice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


# A step range that makes no sense; a plain ValueError (see core.blocklist.BlockListError).
ScheduleError = ValueError


@dataclass(frozen=True)
class StepRange:
    """Active for sigma in (sigma_end, sigma_start]; `start_percent == end_percent` is the empty range."""

    start_percent: float
    end_percent: float
    sigma_start: float
    sigma_end: float

    @property
    def empty(self) -> bool:
        return self.start_percent == self.end_percent

    def contains(self, sigma: float) -> bool:
        return not self.empty and self.sigma_end < sigma <= self.sigma_start


def check_percents(start_percent: float, end_percent: float) -> None:
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if not 0.0 <= value <= 1.0:  # also refuses NaN, for which every comparison is false
            raise ScheduleError(f"{name} must be between 0 and 1, got {value}")
    if start_percent > end_percent:
        raise ScheduleError(
            f"start_percent ({start_percent}) is after end_percent ({end_percent}): "
            "the range runs from the start of the denoising (0) to its end (1)"
        )


def step_range(start_percent: float, end_percent: float, percent_to_sigma: Callable[[float], float]) -> StepRange:
    check_percents(start_percent, end_percent)
    return StepRange(
        start_percent=float(start_percent),
        end_percent=float(end_percent),
        sigma_start=float(percent_to_sigma(start_percent)),
        sigma_end=float(percent_to_sigma(end_percent)),
    )


def percent_for_sigma(sigma: float, percent_to_sigma: Callable[[float], float], iterations: int = 60) -> float:
    """The percent at which the model's schedule reaches `sigma` (bisection; percent_to_sigma is decreasing).

    Used by presets that are defined by a sigma threshold, such as the official AlignVid code's t > 900.
    """
    low, high = 0.0, 1.0
    for _ in range(iterations):
        mid = (low + high) / 2
        if percent_to_sigma(mid) > sigma:
            low = mid
        else:
            high = mid
    return round(high, 4)


# A schedule's sigmas are float32 values of thresholds such as 0.9 (Wan at shift 3 reaches exactly
# t = 900 at step 10 of 40): within this relative tolerance a sigma counts as equal to the threshold.
THRESHOLD_TOLERANCE = 1e-6


def sigma_window(above: float | None, at_most: float | None, percent_to_sigma: Callable[[float], float]) -> StepRange:
    """The steps where above < sigma <= at_most (None = unbounded), as a code that gates on t thresholds does.

    The percents are those of the model's schedule at the thresholds, for reports and previews.
    """
    top, bottom = float(percent_to_sigma(0.0)), float(percent_to_sigma(1.0))
    sigma_start = top if at_most is None else min(top, at_most * (1 + THRESHOLD_TOLERANCE))
    sigma_end = bottom if above is None else max(bottom, above * (1 + THRESHOLD_TOLERANCE))
    start = 0.0 if at_most is None else percent_for_sigma(at_most, percent_to_sigma)
    end = 1.0 if above is None else percent_for_sigma(above, percent_to_sigma)
    if sigma_end >= sigma_start:
        end = start
    elif start == end:  # a window narrower than the percent rounding: still a window
        end = min(1.0, start + 1e-4)
    return StepRange(start_percent=start, end_percent=end, sigma_start=sigma_start, sigma_end=sigma_end)
