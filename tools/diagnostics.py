"""Proof that a method's mechanism acted in a run (issue #21 item 5), read from the run's own
files: OUTPUT_DIR/metrics.json (plugins.engine.metrics.MetricsJSONWriter, fastreid's format: one
JSON object per write and iteration, every 20 iterations and after each evaluation, holding each
scalar's latest value, or its median over the last 20 iterations when it was put with
smoothing_hint True, fastreid's default), dg_results.json (evaluation results), log.txt
and pseudo-label files.

Each diagnostic is `fn(run_dir) -> {"values": {name: number}, "acted": True | False | None,
"why": str}`; `acted` None means the run holds no evidence either way (the method does not log
what the diagnostic needs). The thresholds below are this toolbox's choices, not the papers'.
"""
import ast
import glob
import json
import math
import os
import re

import numpy as np

MIN_AUX_RATIO = 0.01      # PAOA: |g_aux| / |g_prim| below 1% changes the update by < ~1%
MIN_LOSS_DROP = 0.05      # PTL: a proxy loss on target images must fall by >= 5% (first vs last fifth)
MIN_DISC_ABOVE_CHANCE = 0.05   # DomainMix: discriminator accuracy must beat chance by 5 points once
# PAOA+: the features the evaluator ranks must move by >= 1% of their norm on average. For unit-norm
# features a relative change eps moves each cosine similarity by at most ~4 eps (both features move,
# each by <= 2 eps after normalisation), so below 1% only near-ties can swap places in a ranking.
MIN_FEATURE_CHANGE = 0.01
# TAL: DABN's mean weight entropy must fall >= 5% below ln K (uniform weights, where DABN starts and
# equals the experts' average); for K = 3, 0.95 ln 3 is the entropy of weights (0.49, 0.25, 0.25).
MIN_ENTROPY_DROP = 0.05


def read_metrics(run_dir):
    """[dict] of OUTPUT_DIR/metrics.json lines, in order ([] when the file is missing)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:   # a line cut by an interrupted run
                    continue
    return out


def series(metrics, key):
    """[(iteration, value)] of `key` over the metrics lines that hold it."""
    return [(m.get("iteration", i), float(m[key])) for i, m in enumerate(metrics) if key in m]


def _none(why):
    return {"values": {}, "acted": None, "why": why}


def _diverged(values, key, label, process="training"):
    """The "did not act" result when values[key] is NaN / inf (a diverged run: NaN is below and
    above every threshold, so a plain comparison read it as "acted"), else None."""
    if math.isfinite(values[key]):
        return None
    return {"values": values, "acted": False,
            "why": f"{label} is not finite ({values[key]}): the {process} diverged"}


def _log(run_dir):
    path = os.path.join(run_dir, "log.txt")
    return open(path).read() if os.path.exists(path) else ""


# ---------------------------------------------------------------- ADIN
ADIN_WARMUP_PHASES = 2     # joint, nuisance pre-training; then the cycle adversarial, identity


def adin(run_dir):
    """Phases entered (AlternatingSchedule's `phase_index`: the warm-up's joint and pre-training
    stages, then adversarial / identity in turn) and the nuisance classifiers' accuracy f_N against
    chance (the largest class prior, from the trainer's "ADIN nuisance heads" log line). Acted: at
    least one adversarial phase was entered."""
    m = read_metrics(run_dir)
    idx = series(m, "phase_index")
    if not idx:
        return _none("no phase_index in metrics.json (no alternating schedule: the no-adversary row)")
    top = int(max(v for _, v in idx))
    adversarial = sum(1 for i in range(ADIN_WARMUP_PHASES, top + 1) if (i - ADIN_WARMUP_PHASES) % 2 == 0)
    values = {"phases_entered": top + 1, "adversarial_phases": adversarial}
    priors = dict(re.findall(r"(\w+): (\[[0-9., e-]+\])", _log(run_dir).split("ADIN nuisance heads", 1)[-1]
                             .split("\n", 1)[0])) if "ADIN nuisance heads" in _log(run_dir) else {}
    for key in sorted(k for k in {k for line in m for k in line} if k.startswith("nuisance_acc_")):
        head = key[len("nuisance_acc_"):]
        vals = [v for _, v in series(m, key)]
        values[f"f_N_acc_{head}"] = float(np.mean(vals[-max(1, len(vals) // 5):]))   # last fifth
        if head in priors:
            values[f"chance_{head}"] = float(max(ast.literal_eval(priors[head])))
    acted = adversarial > 0
    return {"values": values, "acted": acted,
            "why": f"{adversarial} adversarial phase(s) entered" if acted else
            "no adversarial phase inside the budget: the adversary never acted"}


# ---------------------------------------------------------------- PAOA
def paoa(run_dir):
    """Gradient calibration statistics logged by the combiner: the share of steps whose auxiliary
    and primary gradients conflict (grad_conflict_share, last value) and |g_aux| / |g_prim|
    (grad_aux_ratio, mean). Acted: conflicts happened and the auxiliary gradient is at least
    MIN_AUX_RATIO of the primary one."""
    m = read_metrics(run_dir)
    share, ratio = series(m, "grad_conflict_share"), series(m, "grad_aux_ratio")
    if not ratio:
        return _none("no grad_aux_ratio in metrics.json (design (a)'s `sum` combiner logs no gradient "
                     "statistics; or a single objective)")
    values = {"conflict_share": share[-1][1] if share else math.nan,
              "aux_to_primary": float(np.mean([v for _, v in ratio]))}
    if diverged := _diverged(values, "aux_to_primary", "|g_aux| / |g_prim|"):
        return diverged
    if values["aux_to_primary"] < MIN_AUX_RATIO:
        return {"values": values, "acted": False,
                "why": f"|g_aux| / |g_prim| = {values['aux_to_primary']:.4f} < {MIN_AUX_RATIO}: the auxiliary "
                       "signal is too small to change the update"}
    return {"values": values, "acted": True,
            "why": f"|g_aux| / |g_prim| = {values['aux_to_primary']:.3f}, conflicts in "
                   f"{100 * values['conflict_share']:.0f}% of the steps"}


def _results(run_dir, name="dg_results.json"):
    path = os.path.join(run_dir, name)
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return {}


def paoa_plus(run_dir):
    """PAOA+ (test-time adaptation): the relative change of the ranked features caused by the
    adaptation, `tta_feature_change` (plugins/engine/tta.py: mean over a test set's images of
    ||f_adapted - f_trained|| / ||f_trained||), from OUTPUT_DIR/dg_results.json (one value per
    evaluated test set / split; their mean and minimum), else the last value in metrics.json (a
    training run evaluating with adaptation). Acted: the mean is at least MIN_FEATURE_CHANGE (not when
    it is NaN / inf: a diverged adaptation)."""
    splits = _results(run_dir).get("splits") or {}
    vals = [float(m["tta_feature_change"]) for m in splits.values()
            if isinstance(m, dict) and m.get("tta_feature_change") is not None]
    if not vals:
        m = read_metrics(run_dir)
        keys = sorted({k for line in m for k in line if k.split("/")[-1] == "tta_feature_change"})
        vals = [series(m, k)[-1][1] for k in keys]
    if not vals:
        return _none("no tta_feature_change in dg_results.json or metrics.json (no test-time adaptation, "
                     "or TEST.ADAPT.FEATURE_CHANGE False)")
    values = {"feature_change": float(np.mean(vals)), "feature_change_min": float(min(vals))}
    if diverged := _diverged(values, "feature_change", "the relative feature change", "adaptation"):
        return diverged
    if values["feature_change"] < MIN_FEATURE_CHANGE:
        return {"values": values, "acted": False,
                "why": f"test-time adaptation changed the features by {values['feature_change']:.2g} of their norm "
                       f"(< {MIN_FEATURE_CHANGE}): the adaptation did not act"}
    return {"values": values, "acted": True,
            "why": f"test-time adaptation changed the features by {values['feature_change']:.3f} of their norm"}


# ---------------------------------------------------------------- PTL
def ptl(run_dir):
    """The proxy losses on target images (loss_hp_t, loss_attr_t): mean of the first and the last
    fifth of their logged values. Acted: each present one fell by at least MIN_LOSS_DROP."""
    m = read_metrics(run_dir)
    values, falling = {}, []
    for key in ("loss_hp_t", "loss_attr_t"):
        vals = [v for _, v in series(m, key)]
        if len(vals) < 2:
            continue
        k = max(1, len(vals) // 5)
        first, last = float(np.mean(vals[:k])), float(np.mean(vals[-k:]))
        values[f"{key}_first"], values[f"{key}_last"] = first, last
        falling.append(last <= (1 - MIN_LOSS_DROP) * first)
    if not falling:
        return _none("fewer than 2 logged values of a target proxy loss in metrics.json (the BL row, or a run "
                     "shorter than 2 x 20 iterations)")
    if not all(math.isfinite(v) for v in values.values()):
        return {"values": values, "acted": False,
                "why": "a target proxy loss is not finite: the training diverged"}
    return {"values": values, "acted": all(falling),
            "why": "target proxy losses fell" if all(falling) else "a target proxy loss did not fall"}


# ---------------------------------------------------------------- TAL
def tal(run_dir):
    """DABN's domain weights (Eq. 6) as TAL logs them (tal.model.dabn_routing_stats; metrics.json
    holds each scalar's median over the 20 iterations before a write): mean weight entropy over the
    last fifth of the logged values against ln K, routing accuracy (share of training samples whose
    largest weight is their own domain's expert) overall and per expert, and its chance level (the
    largest expert's share of a batch). Acted: the entropy fell at least MIN_ENTROPY_DROP below ln K;
    no evidence either way (None) with one expert (K = 1, ln K = 0)."""
    m = read_metrics(run_dir)
    ent = [v for _, v in series(m, "dabn_entropy")]
    if not ent:
        return _none("no dabn_entropy in metrics.json (no DABN: DS-only, average or BN rows)")
    log_k = series(m, "dabn_entropy_max")[-1][1]

    def last_fifth(key):
        vals = [v for _, v in series(m, key)]
        return float(np.mean(vals[-max(1, len(vals) // 5):]))
    values = {"dabn_entropy": last_fifth("dabn_entropy"), "ln_K": log_k,
              "routing_acc": last_fifth("dabn_routing_acc"), "routing_chance": last_fifth("dabn_routing_chance")}
    for key in sorted({k for line in m for k in line if k.startswith("dabn_routing_acc_e")}):
        values["routing_acc_" + key[len("dabn_routing_acc_"):]] = last_fifth(key)
    if log_k <= 0:   # K = 1: ln K = 0 = every entropy
        return {"values": values, "acted": None,
                "why": "one DABN expert (K = 1): alpha is always 1, there is nothing to route"}
    if diverged := _diverged(values, "dabn_entropy", "DABN weight entropy"):
        return diverged
    if values["dabn_entropy"] > (1 - MIN_ENTROPY_DROP) * log_k:
        return {"values": values, "acted": False,
                "why": f"DABN weight entropy {values['dabn_entropy']:.3f} is within {100 * MIN_ENTROPY_DROP:.0f}% of "
                       f"ln K = {log_k:.3f} (uniform): DABN stayed the experts' average"}
    return {"values": values, "acted": True,
            "why": f"DABN weight entropy {values['dabn_entropy']:.3f} < ln K = {log_k:.3f}, routing accuracy "
                   f"{values['routing_acc']:.2f} (chance {values['routing_chance']:.2f})"}


# ---------------------------------------------------------------- DomainMix
def _true_id(path):
    """(domain directory, person id) from a synthetic benchmark path .../domain<k>/<split>/PPPP_c..."""
    parts = path.replace("\\", "/").split("/")
    return parts[-3], int(parts[-1][:4])


def domainmix(run_dir):
    """Clusters of the last pseudo-label file in the run, their purity and adjusted Rand index
    against the hidden identities of the unlabelled images (sklearn), and the domain
    discriminator's accuracy (domain_acc, max over the run) against chance (the largest domain
    share is not logged: 1 / number of domains is used). Acted: clusters were formed and the
    discriminator beat chance by MIN_DISC_ABOVE_CHANCE at some point."""
    from sklearn.metrics import adjusted_rand_score
    best, values = None, {}
    for path in glob.glob(os.path.join(run_dir, "**", "*.json"), recursive=True):
        if os.path.basename(path) in ("metrics.json", "dg_results.json"):
            continue
        try:
            data = json.load(open(path))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "labels" in data and isinstance(data.get("meta"), dict):
            epoch = data["meta"].get("epoch", -1)
            if best is None or epoch > best[0]:
                best = (epoch, data["labels"])
    if best is not None:
        items = [(p, lab) for p, lab in best[1].items()]
        truth = [str(_true_id(p)) for p, _ in items]
        pred = np.array([lab for _, lab in items])
        kept = pred >= 0
        values["clusters"] = int(len(set(pred[kept].tolist())))
        values["true_ids"] = int(len(set(truth)))
        values["outliers"] = int((~kept).sum())
        if kept.any():
            t = np.array(truth)[kept]
            majority = sum(np.unique(t[pred[kept] == c], return_counts=True)[1].max() for c in np.unique(pred[kept]))
            values["purity"] = float(majority / kept.sum())
            values["ARI"] = float(adjusted_rand_score(t, pred[kept]))
    disc = [v for _, v in series(read_metrics(run_dir), "domain_acc")]
    if disc:
        values["disc_acc_max"] = float(max(disc))
        values["disc_chance"] = 0.5
    if not values:
        return _none("no pseudo-label file and no domain_acc in the run (synthetic only)")
    acted = values.get("clusters", 0) > 0 and (not disc or values["disc_acc_max"] >= 0.5 + MIN_DISC_ABOVE_CHANCE)
    return {"values": values, "acted": acted,
            "why": "clusters formed" + (" and the discriminator beat chance" if disc else "") if acted else
            "no clusters, or the discriminator stayed at chance"}


DIAGNOSTICS = {"adin": adin, "paoa": paoa, "paoa_plus": paoa_plus, "ptl": ptl, "tal": tal,
               "domainmix": domainmix}


def run_diagnostics(names, run_dir):
    """{name: result} of the named diagnostics on one run; an unknown name is a KeyError listing them."""
    out = {}
    for n in names:
        if n not in DIAGNOSTICS:
            raise KeyError(f"unknown diagnostic {n!r}; known: {sorted(DIAGNOSTICS)}")
        out[n] = DIAGNOSTICS[n](run_dir)
    return out


def summarize_acted(per_seed):
    """per_seed: [{name: result}] over the seeds of one row -> (acted True/False/None, text). A row
    acted when every seed's every diagnostic with evidence acted; None when none has evidence.
    The text gives each distinct reason once; when the seeds disagree (some acted, some did not),
    it says in how many seeds each side held: "did not act in 1 of 3 seeds: ...; acted in 2 of 3
    seeds: ..."."""
    flags = [r["acted"] for d in per_seed for r in d.values() if r["acted"] is not None]
    whys = sorted({r["why"] for d in per_seed for r in d.values()})
    if not flags:
        return None, "; ".join(whys)
    seed_acted = [all(r["acted"] is not False for r in d.values()) for d in per_seed]
    if all(seed_acted) or not any(seed_acted):
        return all(flags), "; ".join(whys)
    n, parts = len(per_seed), []
    for label, side in (("did not act", False), ("acted", True)):
        ds = [d for d, a in zip(per_seed, seed_acted) if a is side]
        parts.append(f"{label} in {len(ds)} of {n} seeds: "
                     + "; ".join(sorted({r["why"] for d in ds for r in d.values()})))
    return False, " | ".join(parts)


def main(argv=None):
    """`python -m tools.diagnostics RUN_DIR NAME [NAME ...]`: print {name: result} of the named
    diagnostics on one run's OUTPUT_DIR as JSON (e.g. `paoa_plus` after a PAOA+ `--eval-only`)."""
    import argparse
    parser = argparse.ArgumentParser(description="Proof that a method's mechanism acted in one run (issue #21)")
    parser.add_argument("run_dir", help="the run's OUTPUT_DIR")
    parser.add_argument("names", nargs="+", help=f"diagnostics, of {sorted(DIAGNOSTICS)}")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.run_dir):
        parser.error(f"run directory {args.run_dir} does not exist")
    unknown = [n for n in args.names if n not in DIAGNOSTICS]
    if unknown:
        parser.error(f"unknown diagnostic(s) {unknown}; known: {sorted(DIAGNOSTICS)}")
    print(json.dumps(run_diagnostics(args.names, args.run_dir), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
