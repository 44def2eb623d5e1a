"""Process tuning for small CPU machines, applied by `import plugins` before torch and faiss load.

Not fastreid shims (those are in plugins.compat): environment and allocator settings that make the
same computation faster. Each one is skipped when the user chose the setting, and `APPLIED` lists
what was set.
"""
import sys

APPLIED = []  # names of the tunings applied in this process


def _mark(name):
    if name not in APPLIED:
        APPLIED.append(name)


def fix_openblas_coretype():
    """faiss-cpu's bundled OpenBLAS does not recognise some virtual CPUs (generic "Intel Xeon
    Processor" models) and falls back to slow generic kernels (~5x slower kNN): name the core type
    from the CPU flags unless the user set OPENBLAS_CORETYPE. Must run before faiss is imported."""
    import os
    if os.environ.get("OPENBLAS_CORETYPE") or "faiss" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return
    flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "")
    if "GenuineIntel" not in info or "Core" in model or "Xeon(R) CPU" in model:
        return   # a named Intel model: OpenBLAS identifies it itself
    coretype = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None
    if coretype:
        os.environ["OPENBLAS_CORETYPE"] = coretype
        _mark("openblas_coretype")


def fix_openmp_wait_policy():
    """torch's OpenMP threads busy-wait between parallel regions by default; on a small CPU machine
    shared with data-loader workers or other jobs this made a ResNet-18 step ~7x slower (4.7 s vs
    0.69 s measured on 2 cores). Unless the user chose, threads wait passively. OpenMP reads the
    variable when torch loads it, so this only works when `import plugins` comes before torch
    (train_net.py, the tests and the Makefile targets ensure it; GPU steps are unaffected)."""
    import os
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _mark("openmp_wait_policy")


MALLOC_KEEP_BYTES = 2 ** 31 - 1   # largest value mallopt takes (an int)


def _user_tuned_malloc(env):
    return ("malloc" in env.get("LD_PRELOAD", "") or "malloc" in env.get("GLIBC_TUNABLES", "")
            or any(k.startswith("MALLOC_") for k in env) or env.get("DGREID_MALLOC") == "system")


def fix_cpu_page_faults():
    """torch's CPU tensors come straight from malloc, and glibc maps every block above 32 MB afresh
    and unmaps it on free: each training step page-faults its activations and gradients in again.
    ResNet-50 at 256x128, batch 64, 2 cores: 3.9 M faults and ~8 s of kernel time per step. Freed
    blocks up to 2 GB now stay in the heap for reuse, as a caching allocator would keep them: the
    kernel time goes (a step 14.9-15.9 s instead of 17.9-20.7 s) and the process keeps ~25% more memory
    at its peak. Skipped unless glibc allocates and the user set no malloc tuning (LD_PRELOAD of
    an allocator, GLIBC_TUNABLES, MALLOC_*, or DGREID_MALLOC=system to opt out)."""
    import ctypes
    import os
    if not sys.platform.startswith("linux") or _user_tuned_malloc(os.environ):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version   # glibc only
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3   # <malloc.h>
    if libc.mallopt(m_mmap_threshold, MALLOC_KEEP_BYTES) and libc.mallopt(m_trim_threshold, MALLOC_KEEP_BYTES):
        _mark("cpu_page_faults")


TUNINGS = (fix_openblas_coretype, fix_openmp_wait_policy, fix_cpu_page_faults)


def apply():
    """Apply every tuning (each a no-op when chosen by the user or too late); returns `APPLIED`."""
    for tuning in TUNINGS:
        tuning()
    return list(APPLIED)
