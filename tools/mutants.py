"""`make mutants`: a mutation check of the tests that pin the papers (issue #20, item 4).

Each mutant is one edit: a paper value in a shipped config, one sign in a loss, or the dense-label
transform. For each, a scratch copy of the repository (the tracked files of the working tree) gets
that single edit, the tests named for it run there, and the mutant is *killed* when they fail,
*survives* when they pass. The report lists the survivors; the exit status is 1 if any survived
(or an edit no longer applies, i.e. the list needs updating), 2 if a test selection fails
without any edit (checked first), else 0.

    python tools/mutants.py                  # every mutant (slow: one pytest run each)
    python tools/mutants.py --only PTL tal-  # mutants whose id or project contains a word
    python tools/mutants.py --list           # the list, nothing run

Why not mutmut / cosmic-ray: they generate many random operator mutations of Python code and cannot
edit YAML configs; this list is curated (the issue's edits plus one sign per loss), and each entry
names the tests that must catch it, so a run stays within minutes of a 2-core machine.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Mutant:
    id: str
    project: str
    path: str          # relative to the repository root
    old: str           # exact text, must occur exactly once in `path`
    new: str
    tests: list = field(default_factory=list)   # pytest arguments (paths, -k expressions)
    what: str = ""


def manifest(project):
    return ["tests/test_paper_manifests.py", "-k", project]


DM = "projects/DomainMix/configs/Base-DomainMix.yml"
PTL_BASE = "projects/PTL/configs/Base-PTL.yml"
TAL_BASE = "projects/TAL/configs/Base-TAL.yml"
ADIN_CANE = "projects/ADIN/configs/Duke2Market/resnet50_cane.yml"
TRANSFORMS = "plugins/data/transforms.py"
ENTROPY = "plugins/losses/entropy.py"
DENSE = ["tests/test_dense_labels.py", "-k", "follow_every_shipped or move_labels_with"]

MUTANTS = [
    # --- the config edits (#20): each must fail the paper manifest test ---
    Mutant("ptl-hp_t-attributes", "PTL", "projects/PTL/configs/Market2Duke/hp_t.yml",
           '  HP:\n    DOMAINS: ("target",)', '  ATTR:\n    DOMAINS: ("target",)', manifest("PTL"),
           "BL+HP^t trains attributes instead of parsing"),
    Mutant("ptl-lambda-hp-5", "PTL", PTL_BASE, "WEIGHT: 0.1 ", "WEIGHT: 5.0 ", manifest("PTL"), "lambda_hp = 5"),
    Mutant("ptl-lr-0.1", "PTL", PTL_BASE, "  IMS_PER_BATCH: 64\n", "  IMS_PER_BATCH: 64\n  BASE_LR: 0.1\n",
           manifest("PTL"), "learning rate 0.1"),
    Mutant("ptl-label-smoothing", "PTL", PTL_BASE, "EPSILON: 0.0 ", "EPSILON: 0.1 ", manifest("PTL"),
           "label smoothing 0.1"),
    Mutant("ptl-1-epoch", "PTL", PTL_BASE, "MAX_EPOCH: 480", "MAX_EPOCH: 1", manifest("PTL"), "1 epoch"),
    Mutant("dm-lambda-s2-1", "DomainMix", DM, "    DM_LOSS: db\n", "    DM_LOSS: db\n    LAMBDA_S2: 1.0\n",
           manifest("DomainMix"), "lambda^s2 = 1"),
    Mutant("dm-lambda-m-0", "DomainMix", DM, "    DM_LOSS: db\n", "    DM_LOSS: db\n    LAMBDA_M: 0.0\n",
           manifest("DomainMix"), "lambda^m = 0"),
    Mutant("dm-disc-lr-1", "DomainMix", DM, "  STAGE3_START: 20\n", "  STAGE3_START: 20\n  DISC_LR_FACTOR: 1.0\n",
           manifest("DomainMix"), "discriminator at the backbone's learning rate"),
    Mutant("dm-max-size-0", "DomainMix", DM, "    PERIOD: 0", "    PERIOD: 0\n    MAX_SIZE: 0",
           manifest("DomainMix"), "no upper cluster-size bound"),
    Mutant("dm-k1-20", "DomainMix", DM, "    PERIOD: 0", "    PERIOD: 0\n    K1: 20", manifest("DomainMix"), "k1 = 20"),
    Mutant("adin-ne-for-cane", "ADIN", ADIN_CANE, "    ADV_LOSS: CaNE", "    ADV_LOSS: NE", manifest("ADIN"),
           "the CaNE row trains NE"),
    Mutant("adin-beta-0", "ADIN", ADIN_CANE, "    ADV_LOSS: CaNE", "    ADV_LOSS: CaNE\n    BETA: 0.0",
           manifest("ADIN"), "beta = 0 (no adversary)"),
    Mutant("tal-lr-0.5", "TAL", TAL_BASE, "BASE_LR: 0.005", "BASE_LR: 0.5", manifest("TAL"), "lr 0.5"),
    Mutant("tal-r-2", "TAL", TAL_BASE, "DABN_REDUCTION: 16", "DABN_REDUCTION: 2", manifest("TAL"), "DABN r = 2"),
    Mutant("tal-margin-0", "TAL", TAL_BASE, "MARGIN: 16.0", "MARGIN: 0.0", manifest("TAL"), "triplet margin 0"),
    Mutant("tal-300-epochs", "TAL", TAL_BASE, "MAX_EPOCH: 30", "MAX_EPOCH: 300", manifest("TAL"), "300 epochs"),
    Mutant("paoa-lambda-1", "PAOA", "projects/PAOA/configs/Base-PAOA.yml", "AUX_WEIGHT: 0.1", "AUX_WEIGHT: 1.0",
           manifest("PAOA"), "lambda = 1"),
    # --- the dense-label transform (PAOA saliency, PTL parsing) ---
    Mutant("labels-ignore-flip-crop", "PAOA+PTL", TRANSFORMS, "labels[k] = label_op(labels[k])",
           "labels[k] = labels[k] if isinstance(op, (T.RandomCrop, T.RandomHorizontalFlip)) else label_op(labels[k])",
           DENSE, "labels no longer follow flips and crops"),
    Mutant("labels-own-random-draw", "PAOA+PTL", TRANSFORMS,
           "                for k in labels:\n                    torch.set_rng_state(state)\n",
           "                for k in labels:\n                    pass\n", DENSE,
           "labels draw their own flip / crop instead of replaying the image's"),
    # --- one sign in each loss ---
    Mutant("sign-ne", "ADIN", ENTROPY, "    return (p * logp).sum(1).mean()", "    return -(p * logp).sum(1).mean()",
           ["projects/ADIN/tests/test_adin_losses.py"], "NE (ADIN Eq. 5) maximised instead"),
    Mutant("sign-cane", "ADIN", ENTROPY, "return (prior * p * logp).sum(1).mean()",
           "return -(prior * p * logp).sum(1).mean()", ["projects/ADIN/tests/test_adin_losses.py"], "CaNE (Eq. 6)"),
    Mutant("sign-rg", "ADIN", "plugins/adversarial.py", "return -ctx.scale * grad, None", "return ctx.scale * grad, None",
           ["projects/ADIN/tests/test_adin_losses.py"], "reverse gradient (Eq. 4) not reversed"),
    Mutant("sign-center", "ADIN", "plugins/losses/center.py", "return 0.5 * diff.pow(2)", "return -0.5 * diff.pow(2)",
           ["projects/ADIN/tests/test_adin_losses.py"], "centre loss pushes away"),
    Mutant("sign-symmetric-kl", "DomainMix", ENTROPY, "((p * logp).sum(1) - logp.mean(1))",
           "((p * logp).sum(1) + logp.mean(1))", ["projects/DomainMix/tests/test_domainmix_losses.py"], "Eq. 6-7"),
    Mutant("sign-domain-balance", "DomainMix", ENTROPY, "(p * logp + 1.0 / logits.shape[1])",
           "(-p * logp + 1.0 / logits.shape[1])", ["projects/DomainMix/tests/test_domainmix_losses.py"], "Eq. 8"),
    Mutant("sign-discriminator", "DomainMix", "projects/DomainMix/domainmix/modeling.py",
           "return F.cross_entropy(logits / temperature", "return -F.cross_entropy(logits / temperature",
           ["projects/DomainMix/tests/test_domainmix_losses.py"], "Eq. 5 maximised"),
    Mutant("sign-saliency-l1", "PAOA", "projects/PAOA/paoa/modeling.py", "else err.flatten(1).sum(1).mean()",
           "else -err.flatten(1).sum(1).mean()", ["projects/PAOA/tests/test_paoa_model.py"], "Eq. 4 maximised"),
    Mutant("sign-projection", "PAOA", "plugins/grad_surgery.py", "return g - torch.where(ref_sq > 0",
           "return g + torch.where(ref_sq > 0", ["projects/PAOA/tests/test_paoa_grad_surgery.py"],
           "Eq. 6 adds the conflicting component instead of removing it"),
    Mutant("sign-parsing", "PTL", "projects/PTL/ptl/losses.py", "return F.cross_entropy(logits, target)",
           "return -F.cross_entropy(logits, target)", ["projects/PTL/tests/test_ptl_losses.py"], "Eq. 4 maximised"),
    Mutant("sign-attributes", "PTL", "projects/PTL/ptl/losses.py", "per_attr = [-(a * F.log_softmax",
           "per_attr = [(a * F.log_softmax", ["projects/PTL/tests/test_ptl_losses.py"], "Eq. 5 maximised"),
    Mutant("sign-tal-triplet", "TAL", "projects/TAL/tal/losses.py", "F.relu(margin - hardest_pos[ok] + hardest_neg[ok])",
           "F.relu(margin + hardest_pos[ok] - hardest_neg[ok])", ["projects/TAL/tests/test_tal_model.py", "-k", "loss"],
           "Eq. 7 with positives and negatives swapped"),
    Mutant("sign-tal-bce", "TAL", "projects/TAL/tal/losses.py", "return loss.sum(dim=1).mean()",
           "return -loss.sum(dim=1).mean()", ["projects/TAL/tests/test_tal_model.py", "-k", "loss"],
           "QAConv-GS pairwise BCE maximised"),
]


def scratch_copy(dest):
    """The working tree's tracked files (edits included) under `dest`."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = os.path.join(REPO, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def applies(m, root=REPO):
    """None if `m`'s edit applies to the tree at `root`, else why not."""
    path = os.path.join(root, m.path)
    if not os.path.isfile(path):
        return f"{m.path} is missing"
    with open(path) as f:
        count = f.read().count(m.old)
    return None if count == 1 else f"the text to edit occurs {count} times in {m.path}"


def run_tests(tests, root, timeout):
    """pytest's exit status for `tests` run in `root` ("timeout" if it ran out of time)."""
    try:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=root, capture_output=True, text=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return "timeout"


def run_mutant(m, root, timeout):
    """'killed' | 'survived' | 'does not apply: ...' for one mutant in the scratch copy `root`."""
    why = applies(m, root)
    if why:
        return f"does not apply: {why}", 0.0
    path = os.path.join(root, m.path)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(m.old, m.new))
    start = time.time()
    try:
        rc = run_tests(m.tests, root, timeout)
    finally:
        with open(path, "w") as f:
            f.write(text)
    took = time.time() - start
    if rc == 0:
        return "survived", took
    if rc == 5:
        return "does not apply: its tests select nothing", took
    return ("killed" if rc == 1 else f"killed (pytest status {rc})"), took


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=[], help="run mutants whose id or project contains one of these")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per mutant's test run")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running each test selection once without any edit (a failure there would "
                         "make every mutant look killed)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or any(w in m.id or w in m.project for w in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.id:26s} {m.project:10s} {m.path}: {m.what}  [tests: {' '.join(m.tests)}]")
        return 0
    if not chosen:
        ap.error(f"no mutant matches {args.only}")
    results = []
    with tempfile.TemporaryDirectory(prefix="dgreid-mutants-") as root:
        scratch_copy(root)
        if not args.no_baseline:
            for tests in dict.fromkeys(tuple(m.tests) for m in chosen):
                rc = run_tests(list(tests), root, args.timeout)
                print(f"{'baseline' if rc == 0 else 'FAILING':10s} {' '.join(tests)} (no edit)", flush=True)
                if rc != 0:
                    print(f"these tests fail without any edit (pytest status {rc}): fix them first")
                    return 2
        for m in chosen:
            outcome, took = run_mutant(m, root, args.timeout)
            results.append((m, outcome))
            print(f"{outcome:10s} {m.id:26s} ({took:5.1f} s) {m.what}", flush=True)
    bad = [(m, o) for m, o in results if not o.startswith("killed")]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutants killed.")
    for m, o in bad:
        print(f"  {o.upper()}: {m.id} ({m.path}: {m.what}); tests: {' '.join(m.tests)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
