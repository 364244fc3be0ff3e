"""Profiles: what a run's identity holds, and refused settings."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tcl.config import PROFILES, get_profile
from tcl.utils import TclError


def test_checkpoint_interval_is_recorded_but_not_part_of_the_key():
    quick = get_profile("quick")
    other = replace(quick, checkpoint_minutes=0.5)
    assert quick.to_dict()["checkpoint_minutes"] == 5.0  # run.json records it
    assert "checkpoint_minutes" not in quick.key_dict()
    assert quick.key_dict() == other.key_dict() and quick.to_dict() != other.to_dict()
    # everything else is in the key: a changed epoch count or width is another run
    assert replace(quick, epochs=15).key_dict() != quick.key_dict()
    assert set(quick.to_dict()) - set(quick.key_dict()) == {"checkpoint_minutes"}


def test_every_profile_checkpoints_by_time_with_a_sensible_interval():
    # paper: far longer than its ~80 s of GPU training (no periodic 2.5 GB write there), short
    # against the hours it takes on a CPU; quick and smoke runs take minutes or seconds
    assert PROFILES["paper"].checkpoint_minutes == 15.0
    assert PROFILES["quick"].checkpoint_minutes == 5.0
    assert 0 < PROFILES["smoke"].checkpoint_minutes
    assert not hasattr(PROFILES["paper"], "checkpoint_every")


@pytest.mark.parametrize("minutes", [-1.0, math.nan])
def test_a_negative_or_missing_interval_is_refused_naming_the_setting(minutes):
    with pytest.raises(TclError, match="checkpoint_minutes"):
        replace(get_profile("smoke"), checkpoint_minutes=minutes)
