"""PTL's part of `make bench` and `make compare` (see tools.BenchSettings / CompareSettings)."""
from tools import Ablation, BenchSettings, CompareSettings, Row

_SYN = "projects/PTL/configs/Synthetic/"
SYNTHETIC = _SYN + "ptl.yml"

BENCH = BenchSettings(step_configs={"PTL (HP^t + Attr^t)": SYNTHETIC})   # step time vs the baseline
COMPARE = CompareSettings(
    config=SYNTHETIC, note="SynthDomain0-2 + unlabelled SynthDomain3 train images",
    differs="global max pooling and target-domain images with proxy labels: see the PTL Table 2 rows",
    ablations=(Ablation("PTL (Huang et al., ICME 2020) Table 2: proxy tasks on target images", rows=(
        Row("BL", _SYN + "baseline.yml"),
        Row("HP^t", _SYN + "hp_t.yml", against="BL", diagnostics=("ptl",)),
        Row("Attr^t", _SYN + "attr_t.yml", against="BL", diagnostics=("ptl",)),
        Row("PTL", SYNTHETIC, against="BL", diagnostics=("ptl",)),
    )),))
