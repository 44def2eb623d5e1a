"""Gradient calibration (plugins.grad_surgery): Eq. 6 and the designs of Table 5 on hand-made
vectors, their properties on random ones, and each design inside the engine's step on a toy model."""
import os

import numpy as np
import pytest
import torch
from fastreid.utils.events import EventStorage
from torch import nn

from paoa_testutils import REPO  # (project discovery: registers the combiners)
from plugins.engine import DGStep, build_optimizer
from plugins.grad_surgery import SMALL, CalibrateAux, CalibratePrimary, Mutual, inner_products, project
from plugins.registry import GRAD_COMBINERS

DESIGNS = {"sum": "a", "calibrate_primary": "b", "mutual": "c", "calibrate_aux": "d"}


def reference(design, g_p, g_a):
    """Independent float64 re-derivation of each design (Fig. 5 of the paper)."""
    g_p, g_a = np.asarray(g_p, np.float64), np.asarray(g_a, np.float64)
    d = g_p @ g_a
    if design == "a" or d >= 0:
        return g_p + g_a
    p_c = g_p - d / (g_a @ g_a) * g_a     # primary projected on the auxiliary's normal plane
    a_c = g_a - d / (g_p @ g_p) * g_p     # auxiliary projected on the primary's normal plane (Eq. 6)
    return {"b": p_c + g_a, "c": p_c + a_c, "d": g_p + a_c}[design]


def combine(name, g_p, g_a):
    out, stats = GRAD_COMBINERS.get(name)(None)({"primary": torch.tensor(g_p, dtype=torch.float32),
                                                 "aux": torch.tensor(g_a, dtype=torch.float32)})
    return out.numpy(), stats


def test_names_map_to_the_designs():
    assert GRAD_COMBINERS.get("calibrate_aux") is GRAD_COMBINERS.get("paoa") is CalibrateAux
    assert GRAD_COMBINERS.get("mutual") is GRAD_COMBINERS.get("pcgrad") is Mutual
    assert GRAD_COMBINERS.get("calibrate_primary") is CalibratePrimary


def test_eq6_on_hand_made_vectors():
    g_p, g_a = [2.0, 0.0], [-1.0, 1.0]          # g_a . g_p = -2 < 0
    # g_a^c = g_a - (-2 / 4) g_p = (0, 1): orthogonal to g_p, its g_p-free part kept
    assert project(torch.tensor(g_a), torch.tensor(g_p)).tolist() == [0.0, 1.0]
    out, stats = combine("calibrate_aux", g_p, g_a)
    assert out.tolist() == [2.0, 1.0]
    assert stats["grad_conflict"] == 1.0
    assert stats["grad_cosine"] == pytest.approx(-2 / (2 * 2 ** 0.5))
    assert stats["grad_aux_ratio"] == pytest.approx(2 ** 0.5 / 2)   # |g_a| / |g_p| before calibration
    # design (b): g_p^c = g_p - (-2 / 2) g_a = (1, 1); (c): (1, 1) + (0, 1)
    assert combine("calibrate_primary", g_p, g_a)[0].tolist() == [0.0, 2.0]
    assert combine("mutual", g_p, g_a)[0].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("name", ["calibrate_primary", "mutual", "calibrate_aux"])
def test_designs_match_reference_and_leave_agreeing_gradients_alone(name):
    rng = np.random.default_rng(0)
    conflicts = 0
    for _ in range(200):
        n = int(rng.integers(2, 50))
        g_p, g_a = rng.normal(size=n) * rng.exponential(), rng.normal(size=n) * rng.exponential()
        out, stats = combine(name, g_p, g_a)
        np.testing.assert_allclose(out, reference(DESIGNS[name], g_p, g_a), rtol=1e-4, atol=1e-5)
        conflict = g_p @ g_a < 0
        conflicts += conflict
        assert stats["grad_conflict"] == float(conflict)
        assert stats["grad_cosine"] == pytest.approx(g_p @ g_a / np.linalg.norm(g_p) / np.linalg.norm(g_a), abs=1e-5)
        assert stats["grad_aux_ratio"] == pytest.approx(np.linalg.norm(g_a) / np.linalg.norm(g_p), rel=1e-5)
        if not conflict:   # unchanged: the plain sum, bit for bit
            assert np.array_equal(out, (torch.tensor(g_p, dtype=torch.float32) + torch.tensor(g_a, dtype=torch.float32)).numpy())
    assert 50 < conflicts < 150


def test_calibrated_auxiliary_never_opposes_the_primary():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 2000))
        g_p, g_a = torch.tensor(rng.normal(size=n)), torch.tensor(rng.normal(size=n) * 10)
        if g_a @ g_p >= 0:
            g_a = -g_a
        g_a_c = project(g_a, g_p)
        assert g_a_c @ g_p >= -1e-9 * g_a.norm() * g_p.norm()
        out, _ = CalibrateAux()({"primary": g_p, "aux": g_a})
        # the primary's first-order progress is exactly that of the primary alone
        assert float(out @ g_p) == pytest.approx(float(g_p @ g_p), rel=1e-9)
        out_c, _ = Mutual()({"primary": g_p, "aux": g_a})
        assert out_c @ g_p >= -1e-9 * out_c.norm() * g_p.norm() and out_c @ g_a >= -1e-9 * out_c.norm() * g_a.norm()


@pytest.mark.parametrize("name", ["sum", "calibrate_primary", "mutual", "calibrate_aux"])
def test_per_parameter_lists_equal_the_flat_vector(name):
    """The step passes per-parameter lists; the result is the flat-vector combination, split back."""
    rng = np.random.default_rng(2)
    shapes = [(3, 4), (5,), (2, 2, 3), (1,)]
    for _ in range(20):
        g_p = [torch.tensor(rng.normal(size=s), dtype=torch.float32) for s in shapes]
        g_a = [torch.tensor(rng.normal(size=s), dtype=torch.float32) for s in shapes]
        flat_p, flat_a = (torch.cat([x.reshape(-1) for x in g]) for g in (g_p, g_a))
        out, stats = GRAD_COMBINERS.get(name)(None)({"primary": g_p, "aux": g_a})
        flat_out, flat_stats = GRAD_COMBINERS.get(name)(None)({"primary": flat_p, "aux": flat_a})
        assert [o.shape for o in out] == [x.shape for x in g_p]
        torch.testing.assert_close(torch.cat([o.reshape(-1) for o in out]), flat_out, rtol=1e-5, atol=1e-6)
        assert stats.keys() == flat_stats.keys()
        for k in stats:
            assert stats[k] == pytest.approx(flat_stats[k], rel=1e-5, abs=1e-6)
        # inputs are left untouched (the step may still read them)
        assert torch.equal(torch.cat([x.reshape(-1) for x in g_p]), flat_p)
        assert torch.equal(torch.cat([x.reshape(-1) for x in g_a]), flat_a)


def test_inner_products_over_large_and_small_tensors_against_float64():
    """Large tensors are reduced one by one, the small ones together: the same three numbers as
    an independent float64 computation over the concatenated vectors, inputs untouched."""
    rng = np.random.default_rng(5)
    sizes = [SMALL + 3, 7, SMALL, 1, SMALL - 1, 2 * SMALL, 64]
    g_p = [torch.tensor(rng.normal(size=n), dtype=torch.float32) for n in sizes]
    g_a = [torch.tensor(rng.normal(size=n), dtype=torch.float32) for n in sizes]
    before = [t.clone() for t in g_p + g_a]
    p, a = (np.concatenate([t.numpy().astype(np.float64) for t in g]) for g in (g_p, g_a))
    got = inner_products(g_p, g_a)
    assert got == pytest.approx([p @ a, p @ p, a @ a], rel=1e-5)
    assert all(torch.equal(x, y) for x, y in zip(g_p + g_a, before))
    x, y = g_p[1].double().numpy(), g_a[1].double().numpy()   # a single small tensor
    assert inner_products([g_p[1]], [g_a[1]]) == pytest.approx([x @ y, x @ x, y @ y], rel=1e-5)


@pytest.mark.parametrize("name", ["sum", "calibrate_primary", "mutual", "calibrate_aux"])
def test_inplace_writes_the_same_result_into_the_given_buffers(name):
    """What the engine's step asks for: the same combination, held in one of the input lists."""
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    for _ in range(20):   # about half in conflict
        g_p = [torch.tensor(rng.normal(size=s), dtype=torch.float32) for s in shapes]
        g_a = [torch.tensor(rng.normal(size=s), dtype=torch.float32) for s in shapes]
        expected, _ = GRAD_COMBINERS.get(name)(None)({"primary": g_p, "aux": g_a})
        ids = {id(t) for t in g_p + g_a}
        out, _ = GRAD_COMBINERS.get(name)(None)({"primary": [t.clone() for t in g_p], "aux": [t.clone() for t in g_a]},
                                               inplace=True)
        got, _ = GRAD_COMBINERS.get(name)(None)({"primary": g_p, "aux": g_a}, inplace=True)
        assert all(id(t) in ids for t in got)       # no new gradient tensors
        for e, o in zip(expected, out):
            assert torch.equal(e, o)


def test_conflict_share_counts_steps():
    comb = CalibrateAux()
    for g_a in ([-1.0, 0.0], [1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]):
        _, stats = comb({"primary": torch.tensor([1.0, 0.0]), "aux": torch.tensor(g_a)})
    assert stats["grad_conflict_share"] == 0.5 and stats["grad_conflict"] == 0.0


# ------------------------------------------------------------------ inside the engine's step
class TwoHeads(nn.Module):
    """Shared extractor + primary and auxiliary heads; the auxiliary target opposes the primary."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(4, 3)
        self.heads = nn.Linear(3, 1)
        self.aux_head = nn.Linear(3, 1)

    def forward(self, data):
        f = torch.tanh(self.backbone(data["x"]))
        return {"loss_prim": ((self.heads(f)[:, 0] - data["y"]) ** 2).mean(),
                "loss_saliency": 0.5 * ((self.aux_head(f)[:, 0] - data["y"] ** 2) ** 2).mean()}


def toy_cfg(name):
    from tests.engine.toy import toy_cfg as engine_toy_cfg
    return engine_toy_cfg(GC_NAME=name, GC_AUX_LOSSES=["loss_saliency"], GC_SHARED=["backbone"])


def hand_grads(model, batch):
    out = {}
    for k in ("loss_prim", "loss_saliency"):
        model.zero_grad()
        model(batch)[k].backward()
        out[k] = {n: np.zeros(p.shape) if p.grad is None else p.grad.double().numpy().copy()
                  for n, p in model.named_parameters()}
    model.zero_grad()
    return out


@pytest.mark.parametrize("name", list(DESIGNS))
def test_each_design_in_the_step_on_a_toy_problem(name):
    g = torch.Generator().manual_seed(3)
    batches = [{"x": torch.randn(16, 4, generator=g), "y": torch.randn(16, generator=g)} for _ in range(6)]
    model = TwoHeads()
    step = DGStep(toy_cfg(name), model, batches, {"main": build_optimizer(toy_cfg(name), model)})
    conflicts = 0
    with EventStorage(0) as storage:
        for it, batch in enumerate(batches):
            grads = hand_grads(model, batch)
            before = {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()}
            step.iter = it
            step.run_step()
            shared = [n for n in before if n.startswith("backbone")]
            flat = {k: np.concatenate([grads[k][n].ravel() for n in shared]) for k in grads}
            conflicts += flat["loss_prim"] @ flat["loss_saliency"] < 0
            update = reference(DESIGNS[name], flat["loss_prim"], flat["loss_saliency"])
            now = np.concatenate([p.detach().double().numpy().ravel() for n, p in model.named_parameters() if n in shared])
            np.testing.assert_allclose(now, np.concatenate([before[n].ravel() for n in shared]) - 0.1 * update,
                                       rtol=1e-5, atol=1e-6)
            for n, p in model.named_parameters():   # heads keep their own gradients
                if not n.startswith("backbone"):
                    np.testing.assert_allclose(p.detach().double().numpy(), before[n] - 0.1 * (
                        grads["loss_prim"][n] + grads["loss_saliency"][n]), rtol=1e-5, atol=1e-6)
    assert 0 < conflicts < len(batches)   # both branches were exercised
    if name != "sum":
        assert storage.history("grad_conflict_share").latest() == pytest.approx(conflicts / len(batches))
        ratio = np.linalg.norm(flat["loss_saliency"]) / np.linalg.norm(flat["loss_prim"])   # last batch
        assert storage.history("grad_aux_ratio").latest() == pytest.approx(ratio, rel=1e-5)


def test_accumulated_micro_batches_match_the_joint_batch():
    g = torch.Generator().manual_seed(5)
    joint = [{"x": torch.randn(16, 4, generator=g), "y": torch.randn(16, generator=g)} for _ in range(3)]
    halves = [{k: v[i::2] for k, v in b.items()} for b in joint for i in range(2)]
    models = []
    for data, accum in ((joint, 1), (halves, 2)):
        cfg = toy_cfg("calibrate_aux")
        cfg.SOLVER.ACCUM_STEPS = accum
        model = TwoHeads()
        step = DGStep(cfg, model, data, {"main": build_optimizer(cfg, model)})
        with EventStorage(0):
            for it in range(3):
                step.iter = it
                step.run_step()
        models.append(model)
    for p, q in zip(*(m.parameters() for m in models)):
        assert torch.allclose(p, q, atol=1e-6)


def test_bench_extra_reports_the_calibration_share():
    from tools import load_project_tool
    bench = load_project_tool("PAOA", "bench")
    assert all(os.path.exists(os.path.join(REPO, f)) for f in bench.BENCH.step_configs.values())
    assert bench.BENCH.extra is bench.bench_extra
    out = bench.bench_extra(steps=1, repeats=1, opts=["SOLVER.IMS_PER_BATCH", "8", "INPUT.SIZE_TRAIN", "[32,16]",
                                                  "MODEL.BACKBONE.DEPTH", "18x"])
    assert out["shared_params"] == 11176512   # ResNet-18's parameters: the whole extractor is calibrated
    assert 0 < out["calibration_s"] < out["paoa_step_s"]
    assert out["calibration_share_%"] == pytest.approx(100 * out["calibration_s"] / out["paoa_step_s"])


def test_step_ratios_time_the_three_variants_in_one_run():
    from tools import load_project_tool
    main = load_project_tool("PAOA", "bench").main
    r = main(["--steps", "1", "SOLVER.IMS_PER_BATCH", "8", "INPUT.SIZE_TRAIN", "[32,16]"])
    assert set(r["step_s"]) == {"baseline", "PAOA-no-calibration", "PAOA"}
    assert r["ratio_to_baseline"]["baseline"] == 1.0 and r["ratio_range"]["baseline"] == (1.0, 1.0)
    assert all(v > 0 for v in r["step_s"].values())
    lo, hi = r["ratio_range"]["PAOA"]
    assert lo <= r["ratio_to_baseline"]["PAOA"] <= hi
    assert r["calibration_share_%"] == pytest.approx(100 * r["calibration_s"] / r["step_s"]["PAOA"])


def test_bench_baseline_variant_is_the_plain_model():
    """The 'baseline' of the step ratios has no auxiliary head and one objective; the paper size is
    ResNet-50 at 256x128, batch 64."""
    from tools import load_project_tool
    bench = load_project_tool("PAOA", "bench")
    SIZES, VARIANTS, _cfg = bench.SIZES, bench.VARIANTS, bench._cfg
    from fastreid.modeling.meta_arch import build_model
    cfg = _cfg(SIZES["synthetic"][0], VARIANTS["baseline"])
    model = build_model(cfg)
    assert not hasattr(model, "aux_head") and list(cfg.SOLVER.GRAD_COMBINE.AUX_LOSSES) == []
    paper = _cfg(*SIZES["paper"])
    assert (paper.MODEL.BACKBONE.DEPTH, list(paper.INPUT.SIZE_TRAIN), paper.SOLVER.IMS_PER_BATCH) == ("50x", [256, 128], 64)
    assert list(paper.MODEL.PAOA.SALIENCY_SIZE) == [64, 32]


def test_calibration_statistics_reach_the_log(caplog, monkeypatch):
    import plugins.grad_surgery as gs
    monkeypatch.setattr(gs, "LOG_PERIOD", 2)
    combiner = CalibrateAux()
    g_p, g_a = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])   # |g_a|/|g_p| = 0.7071, cosine -0.7071
    with caplog.at_level("INFO", logger="plugins.grad_surgery"):
        for grads in [(g_p, g_a), (g_p, -g_a), (g_p, g_a)]:   # conflict, none, conflict
            combiner({"primary": grads[0], "aux": grads[1]})
    lines = [r.getMessage() for r in caplog.records if r.name == "plugins.grad_surgery"]
    assert lines == [   # steps 1 and 2 (the period), not 3
        "gradient calibration CalibrateAux, step 1: |g_aux| / |g_prim| = 0.7071, cosine -0.7071, conflict share 1.000",
        "gradient calibration CalibrateAux, step 2: |g_aux| / |g_prim| = 0.7071, cosine 0.7071, conflict share 0.500"]
