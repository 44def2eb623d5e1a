"""Each fastreid shim: the problem is real without it (fresh interpreter), fixed with it, and the
shim is a no-op when its problem is absent."""
import os
import subprocess
import sys
import textwrap
import types

import pytest

import plugins  # noqa: F401
from plugins import compat


# Imports plugins.compat and plugins.process_tuning without running plugins/__init__.py (which would
# apply every tuning and shim): `compat` exists but nothing is applied. A later `import plugins` in
# the snippet runs the real package, which then applies this same `compat`.
PRELUDE = f"""
import sys, types
_stub = types.ModuleType("plugins"); _stub.__path__ = [{os.path.dirname(os.path.dirname(compat.__file__))!r}]
sys.modules["plugins"] = _stub
import plugins.compat as compat, plugins.process_tuning as process_tuning
del sys.modules["plugins"]
"""


def run_py(code):
    code = PRELUDE + textwrap.dedent(code).replace("from plugins import compat\n", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


IMPORT_FIXES = ["fix_collections_aliases", "fix_torch_six", "fix_torchvision_cuda_wheel"]


@pytest.mark.parametrize("skipped", IMPORT_FIXES)
def test_each_import_fix_is_needed(skipped):
    code = f"""
        from plugins import compat
        for f in compat.IMPORT_FIXES:
            if f.__name__ != "{skipped}":
                f()
        import fastreid.data, fastreid.evaluation.testing
    """
    rc, out = run_py(code)
    assert rc != 0, f"fastreid imported although {skipped} was skipped"


def test_import_fixes_together_let_fastreid_import():
    rc, out = run_py("""
        import plugins, fastreid.data, fastreid.engine, fastreid.evaluation
        print(sorted(plugins.compat.APPLIED))
    """)
    assert rc == 0, out


def test_numpy_bool_restored_when_missing():
    rc, out = run_py("""
        import numpy as np
        b = np.bool
        del np.bool
        from plugins import compat
        compat.fix_numpy_bool()
        assert np.bool is np.bool_
        print("restored", "numpy_bool" in compat.APPLIED)
    """)
    assert rc == 0 and "restored True" in out, out
    rc, out = run_py("""
        from plugins import compat
        compat.fix_numpy_bool(); print("applied", "numpy_bool" in compat.APPLIED)
    """)
    assert "applied False" in out, out   # numpy 2 has np.bool: no-op


def test_to_tensor_numpy2_copy_false():
    import numpy as np
    from PIL import Image
    from fastreid.data.transforms.functional import to_tensor
    img16 = Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000)
    assert to_tensor(img16).shape == (1, 3, 4)
    binary = Image.fromarray(np.eye(4, dtype=bool))
    assert to_tensor(binary).sum() == 4 * 255
    rc, out = run_py("""
        import numpy as np
        from PIL import Image
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        from fastreid.data.transforms.functional import to_tensor
        to_tensor(Image.fromarray(np.eye(4, dtype=bool)))
    """)
    assert rc != 0 and "copy" in out, out


def _toy_loader_code(with_shim):
    return f"""
        import torch
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        if {with_shim}: compat.fix_dataloaderx_cpu()
        from fastreid.data.build import build_reid_train_loader
        from fastreid.data.samplers import TrainingSampler
        class DS(torch.utils.data.Dataset):
            def __len__(self): return 8
            def __getitem__(self, i): return {{"images": torch.zeros(3), "targets": i}}
        loader = build_reid_train_loader(train_set=DS(), sampler=TrainingSampler(8), total_batch_size=4)
        print(next(iter(loader))["images"].shape)
    """


def test_dataloaderx_on_cpu():
    rc, out = run_py(_toy_loader_code(False))
    assert rc != 0, out
    rc, out = run_py(_toy_loader_code(True))
    assert rc == 0 and "torch.Size([4, 3])" in out, out


def test_test_loader_workers_follow_config():
    from fastreid.config import get_cfg
    from fastreid.data import build
    cfg = get_cfg()
    cfg.DATALOADER.NUM_WORKERS = 0
    assert build._test_loader_from_config(cfg, test_set=[1, 2], num_query=1)["num_workers"] == 0
    rc, out = run_py("""
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        from fastreid.config import get_cfg
        from fastreid.data import build
        cfg = get_cfg(); cfg.DATALOADER.NUM_WORKERS = 0
        print("workers" , build._test_loader_from_config(cfg, test_set=[1], num_query=1).get("num_workers"))
    """)
    assert "workers None" in out, out   # without the shim the loader falls back to 4 workers


def test_amp_trainer_falls_back_to_fp32_on_cpu():
    import torch
    from fastreid.engine import defaults
    model = torch.nn.Linear(2, 1)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, data):
            return {"loss": self.lin(data).pow(2).mean()}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="fp32"):
        trainer = defaults.AMPTrainer(M(), [torch.ones(4, 2)] * 3, opt, None)
    from fastreid.utils.events import EventStorage
    before = model.weight.detach().clone()
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    assert not torch.equal(before, model.weight)


def test_jaccard_distance_on_cpu_faiss():
    import torch
    from fastreid.utils.compute_dist import build_dist
    feat = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    dist = build_dist(feat, feat, metric="jaccard", k1=5, k2=2)
    assert dist.shape == (30, 30)
    assert abs(float(dist[0, 0])) < 1e-5
    rc, out = run_py("""
        import torch
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        from fastreid.utils.compute_dist import build_dist
        build_dist(torch.randn(20, 4), torch.randn(20, 4), metric="jaccard", k1=5, k2=2)
    """)
    assert rc != 0, out


def test_missing_cython_build_falls_back_without_exit():
    code = """
        import sys
        sys.modules["fastreid.evaluation.rank_cylib.rank_cy"] = None   # simulate: never built
        from plugins import compat
        compat.evaluation.build_cython = lambda: False               # and building fails
        for f in compat.IMPORT_FIXES: f()
        import fastreid
        if {shim}: compat.fix_cython_compile_exit()
        else: import fastreid.evaluation.rank_cylib as r; r.compile_helper = lambda: sys.exit(1)
        from fastreid.config import get_cfg
        from fastreid.evaluation.reid_evaluation import ReidEvaluator
        import warnings; warnings.simplefilter("ignore")
        ReidEvaluator(get_cfg(), 1)
        print("evaluator built")
    """
    rc, out = run_py(code.format(shim=True))
    assert rc == 0 and "evaluator built" in out, out
    rc, out = run_py(code.format(shim=False))
    assert rc != 0, out


def test_model_device_falls_back_to_cpu():
    from fastreid.config import get_cfg
    cfg = get_cfg()
    assert cfg.MODEL.DEVICE == "cuda"
    compat.fix_model_device(cfg)
    assert cfg.MODEL.DEVICE == "cpu"


def test_shims_are_noops_on_a_healthy_stack():
    """Pretend CUDA and GPU faiss exist: the CUDA-related shims must leave fastreid untouched."""
    rc, out = run_py("""
        import torch, faiss
        torch.cuda.is_available = lambda: True
        faiss.StandardGpuResources = object; faiss.get_num_gpus = lambda: 1
        compat.apply()
        from fastreid.data import data_utils
        from fastreid.config import get_cfg
        cfg = get_cfg(); compat.fix_model_device(cfg)
        print(sorted(compat.APPLIED), data_utils.DataLoaderX.__module__, cfg.MODEL.DEVICE)
    """)
    assert rc == 0, out
    for name in ("dataloaderx_cpu", "amp_on_cpu", "jaccard_cpu_faiss", "launch_cpu_gloo", "model_device"):
        assert name not in out, out
    assert "fastreid.data.data_utils cuda" in out


def test_openblas_coretype_named_for_generic_virtual_cpus():
    import os
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = PRELUDE + "compat.fix_openblas_coretype(); import os; print('core', os.environ.get('OPENBLAS_CORETYPE'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    info = open("/proc/cpuinfo").read()
    model = next(l for l in info.splitlines() if l.startswith("model name"))
    generic = "GenuineIntel" in info and "Core" not in model and "Xeon(R) CPU" not in model
    expected = ("SkylakeX" if "avx512f" in info else "Haswell" if "avx2" in info else None) if generic else None
    assert f"core {expected}" in out, out
    env["OPENBLAS_CORETYPE"] = "Zen"   # a user's choice is never overridden
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    assert "core Zen" in out, out


def test_openmp_threads_wait_passively_unless_chosen():
    import os
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, plugins; print('policy', os.environ.get('OMP_WAIT_POLICY'))"
    run = lambda c, e: subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, env=e).stdout
    assert "policy PASSIVE" in run(code, env)
    assert "policy None" in run("import torch\n" + code, env)   # too late once torch is loaded: no-op
    assert "policy ACTIVE" in run(code, dict(env, OMP_WAIT_POLICY="ACTIVE"))


def test_training_steps_reuse_freed_memory_unless_chosen():
    """Forward/backward steps with 8-64 MB tensors: glibc's default maps them afresh every step
    (tens of thousands of page faults per step); with the shim the steps settle on reused heap
    memory. A user's own malloc tuning turns the shim off. One intra-op thread (one malloc arena)
    and the median step: the count must not depend on how the thread pool was scheduled (CI once
    saw 24576 vs 186260 summed over four steps with worker threads' arenas)."""
    import os
    code = PRELUDE + """
import resource, statistics, sys
if sys.argv[1] == "fix":
    compat.fix_cpu_page_faults()
import torch
torch.set_num_threads(1)
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
x = torch.randn(16, 16, 128, 64)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    (torch.relu(conv(x)).repeat(1, 4, 1, 1) ** 2).sum().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print("faults", int(statistics.median([faults() for _ in range(16)][-9:])), process_tuning.APPLIED)
"""
    env = {k: v for k, v in os.environ.items() if not compat._user_tuned_malloc({k: v})}

    def run(mode, **extra):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                             env=dict(env, **extra)).stdout
        return int(out.split()[1]), "cpu_page_faults" in out

    default, applied = run("default")
    assert default > 10000 and not applied
    faults, applied = run("fix")
    assert applied and faults < default / 10, (faults, default)
    for chosen in ({"DGREID_MALLOC": "system"}, {"MALLOC_ARENA_MAX": "2"}):
        faults, applied = run("fix", **chosen)
        assert faults > default / 2 and not applied


def test_metric_printer_survives_a_repeated_write():
    """Two writes at one iteration before the iteration timer has data: ZeroDivisionError in
    fastreid, handled with the shim (no ETA for the repeated write); the probe sees the fix."""
    code = """
        from plugins import compat
        for f in compat.IMPORT_FIXES:
            f()
        from fastreid.utils.events import CommonMetricPrinter
        print("needed", compat._printer_divides_by_zero(CommonMetricPrinter))
        compat.fix_metric_printer_repeat_write()
        print("after", compat._printer_divides_by_zero(CommonMetricPrinter), compat.APPLIED)
    """
    rc, out = run_py(code)
    assert rc == 0, out
    assert "needed True" in out and "after False" in out and "metric_printer_repeat_write" in out, out


SAMPLER_ORDERS = """
    import itertools
    import numpy as np
    from fastreid.data import samplers

    def target_order(interleave):
        items = [(f"{i}.jpg", i // 2, 0, {}) for i in range(12)]   # 6 ids x 2 images
        target = iter(samplers.TrainingSampler(7, seed=3))
        source = iter(samplers.NaiveIdentitySampler(items, 4, 2, seed=5))
        out = []
        for k in range(21):                                   # three epochs of the target set
            out.append(int(next(target)))
            if interleave:
                list(itertools.islice(source, k % 3 + 1))     # the other loader draws in between
                np.random.rand(k % 2)                         # and so does anyone else
        return out

    expected = [int(i) for rs in [np.random.RandomState(3)] for _ in range(3) for i in rs.permutation(7)]
"""


def test_each_sampler_draws_from_its_own_random_state():
    """fastreid's samplers seed numpy's global state and draw from it: a second loader's draws change
    the target order from the second epoch on. With the shim the order is the seed's own stream
    (three epochs = three permutations of one RandomState(seed)) whatever happens in between, and
    numpy's global state is never touched."""
    rc, out = run_py(f"""
        for fix in compat.IMPORT_FIXES:
            fix()
        {textwrap.indent(textwrap.dedent(SAMPLER_ORDERS), '        ').strip()}
        print("unpatched", target_order(False) == expected, target_order(True) == expected)
        compat.fix_sampler_shared_random_state()
        print("patched", target_order(False) == expected, target_order(True) == expected)
        np.random.seed(0)
        before = np.random.get_state()[1].copy()
        list(itertools.islice(iter(samplers.TrainingSampler(7, seed=1)), 30))
        list(itertools.islice(iter(samplers.NaiveIdentitySampler([("a", i // 2, 0) for i in range(8)], 4, 2, seed=2)), 30))
        print("global untouched", bool((np.random.get_state()[1] == before).all()), compat.APPLIED)
    """)
    assert rc == 0, out
    assert "unpatched True False" in out          # the problem: interleaving changes the order
    assert "patched True True" in out
    assert "global untouched True" in out and "sampler_own_random_state" in out
    # applied once by `import plugins`: a second call patches nothing again
    from fastreid.data.samplers import data_sampler
    shimmed = data_sampler.TrainingSampler._infinite_indices
    compat.fix_sampler_shared_random_state()
    assert data_sampler.TrainingSampler._infinite_indices is shimmed

def test_fastreid_jaccard_never_uses_faiss_padding_as_an_index():
    """1 query + 5 gallery, k1 = 20: unpatched, faiss's -1 padding is read as item 5 and the
    re-ranked distances move by > 0.05; patched, fastreid's code equals the sparse re-ranking."""
    import numpy as np
    import torch
    from fastreid.utils import compute_dist
    from plugins import compat
    from plugins.evaluation.rerank import exact_rerank_dist_fn
    assert "faiss_knn_padding" in compat.APPLIED and compat._faiss_pads_with_minus_one()
    feat = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    ours = exact_rerank_dist_fn(feat[:1], feat[1:], "cosine", 20, 6, 0.0)(0, 1).numpy()
    patched = compute_dist.build_dist(feat[:1], feat[1:], metric="jaccard", k1=20, k2=6)
    np.testing.assert_allclose(patched, ours, atol=1e-5)
    import faiss
    saved = compute_dist.index_init_cpu
    compute_dist.index_init_cpu = faiss.IndexFlatL2
    try:
        padded = compute_dist.build_dist(feat[:1], feat[1:], metric="jaccard", k1=20, k2=6)
    finally:
        compute_dist.index_init_cpu = saved
    assert np.abs(padded - ours).max() > 0.05


FORMER_NAMES = ("APPLIED", "IMPORT_FIXES", "RUNTIME_FIXES", "apply", "build_cython", "cython_rank_available",
                "fix_model_device", "fix_openblas_coretype", "fix_openmp_wait_policy", "fix_cpu_page_faults",
                "MALLOC_KEEP_BYTES", "_user_tuned_malloc", "_faiss_has_gpu", "_faiss_pads_with_minus_one",
                "_printer_divides_by_zero", "_gloo_worker", "_cuda", "_mark")


def test_package_keeps_the_former_module_names_and_lists_only_shims():
    """plugins.compat became a package: `from plugins.compat import X` works for every name the
    single module had; its shim lists hold fastreid shims only (process tuning is its own module)."""
    from plugins import process_tuning
    missing = [n for n in FORMER_NAMES if not hasattr(compat, n)]
    assert missing == []
    assert compat.fix_cpu_page_faults is process_tuning.fix_cpu_page_faults
    shims = {f.__module__ for f in compat.IMPORT_FIXES + compat.RUNTIME_FIXES}
    assert shims == {"plugins.compat.imports", "plugins.compat.data", "plugins.compat.engine",
                     "plugins.compat.evaluation"}
    assert len(compat.IMPORT_FIXES) == 4 and len(compat.RUNTIME_FIXES) == 14
    assert {f.__name__ for f in process_tuning.TUNINGS} == {
        "fix_openblas_coretype", "fix_openmp_wait_policy", "fix_cpu_page_faults"}


def test_tools_compat_lists_the_applied_shims():
    import pathlib
    script = pathlib.Path(compat.__file__).parents[2] / "tools" / "compat.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shims = next(l for l in proc.stdout.splitlines() if l.startswith("shims needed on this stack:"))
    assert "'torch_six'" in shims and "'sampler_own_random_state'" in shims, proc.stdout


def test_gpu_loader_thread_hands_its_error_to_training():
    """fastreid's DataLoaderX (GPU training loader) reads batches in a BackgroundGenerator thread;
    an error there (unreadable image) killed the thread and training waited forever. With the shim
    the error reaches the training loop. Run on CPU with only the CUDA calls stubbed."""
    code = """
        import contextlib, torch
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        torch.cuda.Stream = lambda *a, **k: None
        torch.cuda.set_device = lambda *a, **k: None
        torch.cuda.stream = lambda s: contextlib.nullcontext()
        torch.cuda.current_stream = lambda: type("S", (), {"wait_stream": lambda self, s: None})()
        from fastreid.data import data_utils
        print("loses", compat.data._background_generator_loses_errors(data_utils))
        compat.fix_background_generator_errors()
        compat.fix_background_generator_errors()
        print("after", compat.data._background_generator_loses_errors(data_utils), compat.APPLIED[-1:])
        class DS(torch.utils.data.Dataset):
            def __len__(self): return 8
            def __getitem__(self, i):
                if i == 5:
                    raise OSError("cannot identify image file 'bad.jpg'")
                return {"images": torch.full((3,), float(i))}
        loader = data_utils.DataLoaderX(local_rank="cpu", dataset=DS(), batch_size=2, num_workers=0)
        seen = []
        try:
            for batch in loader:
                seen.append(batch["images"][:, 0].tolist())
        except OSError as e:
            print("raised", e, seen)
    """
    rc, out = run_py(code)
    assert rc == 0, out
    assert "loses True" in out and "after False ['background_generator_errors']" in out, out
    # DataLoaderX prefetches one batch: the error surfaces at the second step (batch 2-3 read, 4-5 failed)
    assert "raised cannot identify image file 'bad.jpg' [[0.0, 1.0]]" in out, out


def test_gpu_loader_thread_error_after_shutdown_is_not_raised_by_shutdown():
    """fastreid's `DataLoaderX.shutdown()` (after an early break) sets the exit event and drains the
    thread's queue with next(): a loader error of a batch read after that (nobody will use it) was
    raised by shutdown itself. Once the consumer asked to stop, such an error ends the drain."""
    code = """
        import time, types, torch
        from plugins import compat
        for f in compat.IMPORT_FIXES: f()
        torch.cuda.set_device = lambda *a, **k: None
        from fastreid.data import data_utils
        compat.fix_background_generator_errors()
        box = []
        def items():
            yield "batch 0"
            deadline = time.monotonic() + 10
            while not (box and box[0].exit_event.is_set()) and time.monotonic() < deadline:
                time.sleep(0.01)
            raise OSError("cannot identify image file 'bad.jpg'")
        bg = data_utils.BackgroundGenerator(items(), 0)
        box.append(bg)
        print("got", next(bg))
        try:
            data_utils.DataLoaderX._shutdown_background_thread(types.SimpleNamespace(iter=bg))
            print("shutdown returned, alive", bg.is_alive())
        except OSError as e:
            print("shutdown raised", e)
    """
    rc, out = run_py(code)
    assert rc == 0, out
    assert "got batch 0" in out and "shutdown returned, alive False" in out, out


def test_background_generator_probe_silences_only_its_own_thread():
    """The probe replaces threading.excepthook while its thread dies; another thread's uncaught
    error in that window was silenced too. Only the probe's thread is silenced, the hook restored."""
    import threading
    seen = []
    other_error = ValueError("another thread's error")

    class Probe(threading.Thread):   # what the probe builds: a thread whose generator raises
        def run(self):
            other = threading.Thread(target=lambda: (_ for _ in ()).throw(other_error))
            other.start()
            other.join()
            raise RuntimeError("probe")

    hook, mine = threading.excepthook, lambda args: seen.append(args.exc_value)
    threading.excepthook = mine
    try:
        loses = compat.data._background_generator_loses_errors(types.SimpleNamespace(BackgroundGenerator=Probe))
        restored = threading.excepthook
    finally:
        threading.excepthook = hook
    assert loses is True and seen == [other_error]
    assert restored is mine   # the hook in place before the probe came back
