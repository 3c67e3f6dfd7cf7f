"""The default scenario reproduces the BIP figures within the tolerances of docs/calibration.md.

Only figures that the simulation produces are checked: the sizes and relative effects that the
scenario sets directly (`planted_rows`) would pass whatever the simulation did.
"""

from simulator.calibration import calibration_rows


def test_default_scenario_matches_bip_figures():
    rows = calibration_rows(citizens=4000, seed=2013)
    misses = [(r.figure, r.bip, round(r.simulated, 2)) for r in rows if not r.within]
    assert misses == []
