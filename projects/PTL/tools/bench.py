"""PTL's part of `make bench` and `make compare` (see tools.BenchSettings / CompareSettings)."""
from tools import BenchSettings, CompareSettings

SYNTHETIC = "projects/PTL/configs/Synthetic/ptl.yml"

BENCH = BenchSettings(step_configs={"PTL (HP^t + Attr^t)": SYNTHETIC})   # step time vs the baseline
COMPARE = CompareSettings(config=SYNTHETIC, note="SynthDomain0-2 + unlabelled SynthDomain3 train images")
