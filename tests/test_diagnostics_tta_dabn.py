"""tools/diagnostics.py's PAOA+ and TAL evidence (issue #21 item 5) on hand-written run files:
the values they report and where "did not act" starts (the logging itself: tests/engine/test_tta.py,
projects/PAOA/tests/test_paoa_tta.py, projects/TAL/tests/test_tal_dabn_diagnostics.py; real runs:
test_paoa_configs.py, test_tal_configs.py)."""
import json
import math

import pytest

from tools import compare, diagnostics


def _write(path, name, payload):
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(payload if isinstance(payload, str) else json.dumps(payload))


def test_paoa_plus_reads_each_split_and_flags_a_negligible_change(tmp_path):
    _write(tmp_path, "dg_results.json", {"splits": {"T@0": {"mAP": 10.0, "tta_feature_change": 3e-4},
                                                    "T@1": {"mAP": 12.0, "tta_feature_change": 5e-4}}})
    r = diagnostics.paoa_plus(str(tmp_path))
    assert r["values"] == {"feature_change": pytest.approx(4e-4), "feature_change_min": 3e-4}
    assert r["acted"] is False and "did not act" in r["why"]
    _write(tmp_path, "dg_results.json", {"splits": {"T": {"tta_feature_change": 0.0100}}})   # at the threshold
    assert diagnostics.paoa_plus(str(tmp_path))["acted"] is True


def test_paoa_plus_falls_back_to_metrics_json_and_says_when_nothing_is_logged(tmp_path):
    assert diagnostics.paoa_plus(str(tmp_path))["acted"] is None
    _write(tmp_path, "dg_results.json", {"splits": {"T": {"mAP": 10.0}}})   # evaluated without adaptation
    r = diagnostics.paoa_plus(str(tmp_path))
    assert r["acted"] is None and "no tta_feature_change" in r["why"]
    _write(tmp_path, "metrics.json", "\n".join(json.dumps(x) for x in (
        {"iteration": 9, "T/tta_feature_change": 0.001, "U/tta_feature_change": 0.5},
        {"iteration": 19, "T/tta_feature_change": 0.02, "U/tta_feature_change": 0.04})) + "\n")
    r = diagnostics.paoa_plus(str(tmp_path))
    assert r["values"] == {"feature_change": pytest.approx(0.03), "feature_change_min": 0.02} and r["acted"] is True


def _dabn_metrics(tmp_path, entropies, k=3):
    lines = [{"iteration": 20 * i + 19, "dabn_entropy": e, "dabn_entropy_max": math.log(k),
              "dabn_routing_acc": 0.3 + 0.05 * i, "dabn_routing_chance": 0.4, "dabn_routing_acc_e0": 0.1 * i,
              "dabn_routing_acc_e2": 0.5} for i, e in enumerate(entropies)]
    _write(tmp_path, "metrics.json", "\n".join(json.dumps(x) for x in lines) + "\n")


def test_tal_reads_the_last_fifth_and_compares_the_entropy_with_ln_k(tmp_path):
    ln3 = math.log(3)
    _dabn_metrics(tmp_path, [ln3] * 8 + [0.9 * ln3, 0.8 * ln3])   # 10 writes: the last fifth is the last 2
    r = diagnostics.tal(str(tmp_path))
    assert r["values"] == pytest.approx({"dabn_entropy": 0.85 * ln3, "ln_K": ln3, "routing_acc": 0.325 + 0.4,
                                         "routing_chance": 0.4, "routing_acc_e0": 0.85, "routing_acc_e2": 0.5})
    assert r["acted"] is True
    _dabn_metrics(tmp_path, [ln3] * 8 + [0.96 * ln3] * 2)   # within 5% of uniform
    r = diagnostics.tal(str(tmp_path))
    assert r["acted"] is False and "stayed the experts' average" in r["why"]
    _write(tmp_path, "metrics.json", json.dumps({"iteration": 19, "loss_ds": 1.0}) + "\n")   # DS-only row
    assert diagnostics.tal(str(tmp_path))["acted"] is None


def test_methods_table_carries_the_variant_and_dabn_diagnostics():
    rows = {r.name: r for r in compare.tables(quick=True)[0][2]}
    assert rows["PAOA+"].diagnostics == ("paoa_plus",) and rows["PAOA+"].evaluate_only
    assert rows["TAL"].diagnostics == ("tal",)


def test_tal_with_one_expert_has_no_evidence_either_way(tmp_path):
    """K = 1 (e.g. MODEL.TAL.DOMAIN_GROUPS [[0, 1, 2]]): alpha is always (1,), entropy 0 = ln 1, so
    "entropy below ln K" read as acted although DABN had nothing to route."""
    _dabn_metrics(tmp_path, [0.0] * 5, k=1)
    r = diagnostics.tal(str(tmp_path))
    assert r["acted"] is None and r["values"]["ln_K"] == 0.0
    assert r["why"] == "one DABN expert (K = 1): alpha is always 1, there is nothing to route"


def test_command_line_prints_the_named_diagnostics(tmp_path, capsys):
    _write(tmp_path, "dg_results.json", {"splits": {"T": {"tta_feature_change": 0.02}}})
    diagnostics.main([str(tmp_path), "paoa_plus", "tal"])
    out = json.loads(capsys.readouterr().out)
    assert out["paoa_plus"]["acted"] is True and out["paoa_plus"]["values"]["feature_change"] == 0.02
    assert out["tal"]["acted"] is None
    with pytest.raises(SystemExit):
        diagnostics.main([str(tmp_path), "dabn"])
    assert "unknown diagnostic(s) ['dabn']; known: ['adin', 'domainmix'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        diagnostics.main([str(tmp_path / "missing"), "tal"])
    assert f"run directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_paoa_plus_non_finite_change_is_not_read_as_acted(tmp_path):
    """A diverged adaptation (NaN / inf features) gave a NaN mean, which is not below the threshold
    and so read as 'acted'."""
    _write(tmp_path, "dg_results.json", '{"splits": {"T@0": {"tta_feature_change": NaN}, '
                                        '"T@1": {"tta_feature_change": 0.5}}}')
    r = diagnostics.paoa_plus(str(tmp_path))
    assert r["acted"] is False
    assert r["why"] == "the relative feature change is not finite (nan): the adaptation diverged"


def test_tal_non_finite_entropy_is_not_read_as_acted(tmp_path):
    """A diverged run's NaN weight entropy is not above 0.95 ln K, so it read as 'acted'."""
    _dabn_metrics(tmp_path, [math.log(3)] * 8 + [math.nan] * 2)
    r = diagnostics.tal(str(tmp_path))
    assert r["acted"] is False and r["why"] == "DABN weight entropy is not finite (nan): the training diverged"
