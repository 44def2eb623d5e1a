"""datasets_ext.synthetic.sanity reports Rank-1 / mAP through the toolbox's evaluator."""
import numpy as np
import pytest

import plugins  # noqa: F401
from datasets_ext.synthetic.sanity import evaluate


def test_sanity_numbers_come_from_the_evaluator():
    # 2 queries, 4 gallery images; cosine similarity by hand below
    q = [("q0", 1, 0, {}), ("q1", 2, 0, {})]
    g = [("g0", 1, 1, {}), ("g1", 2, 1, {}), ("g2", 1, 0, {}), ("g3", 3, 1, {})]
    qf = np.array([[1.0, 0.0], [0.0, 1.0]])
    gf = np.array([[0.6, 0.8], [1.0, 0.1], [1.0, 0.0], [0.8, 0.6]])
    # q0 (pid 1, cam 0): g2 is junk (same pid + camera); ranking by cosine: g1 0.995, g3 0.8, g0 0.6
    #   -> first true match (g0) at rank 3: AP = 1/3, no rank-1 hit
    # q1 (pid 2, cam 0): g0 0.8, g3 0.6, g1 0.0995 -> g1 at rank 3: AP = 1/3, no rank-1 hit
    r1, m_ap = evaluate(qf, gf, q, g)
    assert r1 == 0.0 and m_ap == pytest.approx(1 / 3)
    # swap q1's feature so that g1 comes first: rank-1 1/2, mAP (1/3 + 1) / 2
    r1, m_ap = evaluate(np.array([[1.0, 0.0], [1.0, 0.1]]), gf, q, g)
    assert r1 == 0.5 and m_ap == pytest.approx((1 / 3 + 1) / 2)


def test_sanity_command_names_a_missing_benchmark_and_a_wrong_unseen_domain(tmp_path, capsys):
    """r2 review: a root without a benchmark printed an empty report and exited 0; --unseen past
    the last domain was an IndexError after the whole report."""
    from datasets_ext.synthetic import sanity
    with pytest.raises(SystemExit) as e:
        sanity.main(["--root", str(tmp_path)])
    assert e.value.code == 2
    assert f"--root {tmp_path}: no synthetic benchmark (no {tmp_path}/synthreid/domain*;" in capsys.readouterr().err
    (tmp_path / "synthreid" / "domain0").mkdir(parents=True)
    (tmp_path / "synthreid" / "domain1").mkdir()
    with pytest.raises(SystemExit):
        sanity.main(["--root", str(tmp_path), "--baseline", "--unseen", "5"])
    assert f"--unseen 5: the benchmark at {tmp_path} has domains 0..1" in capsys.readouterr().err
