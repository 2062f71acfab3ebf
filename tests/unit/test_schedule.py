import pytest

from tokenfocus.core.schedule import ScheduleError, percent_for_sigma, step_range


def flow_percent_to_sigma(shift):
    # The shape of ComfyUI's ModelSamplingDiscreteFlow.percent_to_sigma, written out for a pure test.
    def convert(percent):
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        t = 1.0 - percent
        return shift * t / (1 + (shift - 1) * t)
    return convert


def test_early_range_is_active_at_the_start_and_off_later():
    steps = step_range(0.0, 0.3, flow_percent_to_sigma(3.0))
    assert steps.contains(1.0)
    assert steps.contains(steps.sigma_end + 1e-6)
    assert not steps.contains(steps.sigma_end)
    assert not steps.contains(0.2)


def test_equal_percents_are_the_empty_range_even_at_the_first_sigma():
    steps = step_range(0.0, 0.0, flow_percent_to_sigma(3.0))
    assert steps.empty and not steps.contains(1.0)


def test_adjacent_ranges_do_not_overlap():
    convert = flow_percent_to_sigma(5.0)
    early, late = step_range(0.0, 0.4, convert), step_range(0.4, 1.0, convert)
    for sigma in [1.0, 0.95, early.sigma_end, 0.5, 0.1]:
        assert early.contains(sigma) + late.contains(sigma) == 1


@pytest.mark.parametrize("start, end, fragment", [(0.5, 0.2, "after end_percent"), (-0.1, 0.2, "between 0 and 1"), (0.0, 1.5, "between 0 and 1")])
def test_bad_percents_are_errors(start, end, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        step_range(start, end, flow_percent_to_sigma(3.0))


def test_percent_for_sigma_inverts_the_schedule():
    convert = flow_percent_to_sigma(3.0)
    percent = percent_for_sigma(0.9, convert)
    assert abs(convert(percent) - 0.9) < 1e-3
