"""Commands of the toolbox (not library code): `make bench` (tools.bench), `make compare`
(tools.compare), the evaluator benchmark (tools.bench_evaluator), the GPU check (tools/gpu_check.py)
and each project's own commands in `projects/<Name>/tools/`.

Run from the repository root:

    python -m tools.bench [...]                  # make bench
    python -m tools.compare [...]                # make compare
    python -m tools.bench_evaluator [...]        # evaluator / re-ranking benchmark
    python -m tools.dump_configs OUT [...]       # every shipped config fully merged, to diff
    python -m tools.diagnostics RUN NAME [...]   # did the mechanism act in a run (issue #21)
    python -m tools.bench_cluster [...]          # clustering: exact vs approximate k-NN (30k x 2048-d)
    python -m tools.run <Project> <tool> [...]   # projects/<Project>/tools/<tool>.py, e.g. ADIN bench

**What a project contributes to `make bench` / `make compare`** is declared in its
`projects/<Name>/tools/bench.py` by module-level values of the types below (all optional):

    BENCH = BenchSettings(step_configs={"PTL": "projects/PTL/configs/Synthetic/ptl.yml"},
                          extra=my_extra_measurements)
    COMPARE = CompareSettings(config="projects/PTL/configs/Synthetic/ptl.yml",
                              note="SynthDomain0-2 + unlabelled SynthDomain3",
                              ablations=(Ablation("PTL Table 2", rows=(...)),))

The project package itself (`projects/<Name>/<pkg>/`) knows nothing about the commands; no library
module imports a tool or `train_net`.
"""
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
PROJECTS_DIR = REPO / "projects"


@dataclass(frozen=True)
class BenchSettings:
    """A project's part of `make bench`.

    step_configs: {row name: config file relative to the repository} whose training-step time is
        measured against configs/Synthetic/baseline.yml (same backbone, input and batch).
    extra: a function of no arguments returning {name: value} of project-specific measurements
        (e.g. clustering time); printed and written to the JSON report.
    """
    step_configs: Mapping[str, str] = field(default_factory=dict)
    extra: Optional[Callable[[], dict]] = None


@dataclass(frozen=True)
class Row:
    """One row of a paper's ablation table, trained (or, with `evaluate_only`, evaluated) at the
    compare budget.

    name: the row's label in the paper (e.g. "RG", "Aux+GC"); unique within its ablation.
    config: config file relative to the repository; opts: KEY VALUE overrides of it.
    against: name of the row of the same ablation the paper compares this one with (its paired
        difference and verdict are computed against that row); None for the reference row.
    evaluate_only: the row is a test-time variant of the model trained by row `against` (PAOA+):
        evaluation only, from that row's final weights.
    diagnostics: names of `tools.diagnostics` functions that prove the row's mechanism acted.
    """
    name: str
    config: str
    opts: Tuple[str, ...] = ()
    against: Optional[str] = None
    evaluate_only: bool = False
    diagnostics: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Ablation:
    """A paper's ablation table reproduced on the synthetic benchmark: `title` (paper, table) and
    its rows in the paper's order; `preset` is the synthetic benchmark preset it runs on (one with
    the shifts its mechanism is about, see datasets_ext/synthetic)."""
    title: str
    rows: Sequence[Row]
    preset: str = "compare"


@dataclass(frozen=True)
class CompareSettings:
    """A project's part of `make compare`.

    config: the method's synthetic config at the compare budget (its row beside the baseline).
    note: what the method trains on, when not the three labelled source domains.
    variants: {row name: (config, opts)}: test-time variants of the trained model (evaluated only).
    ablations: the paper's own ablation tables (`Ablation`), each row against its paper reference.
    differs: what differs from the common baseline besides the method's mechanism (identity
        objective, head, training data); when set, the methods table shows the method's score with
        this note instead of a verdict against the baseline (the paper's ablation gives the verdict).
    """
    config: Optional[str] = None
    note: str = "SynthDomain0-2"
    differs: str = ""
    variants: Mapping[str, Tuple[str, Sequence[str]]] = field(default_factory=dict)
    ablations: Sequence[Ablation] = ()


def project_dirs():
    """{project name: directory} of every discovered project (plugins.projects: projects/ and
    $DGREID_PROJECTS)."""
    from plugins.projects import project_packages
    return {proj.name: proj for proj, _ in project_packages()}


def project_tool_path(project, tool):
    dirs = project_dirs()
    if project not in dirs:
        raise FileNotFoundError(f"no project {project!r}: the projects are {sorted(dirs)}")
    return Path(dirs[project]) / "tools" / f"{tool}.py"


def load_project_tool(project, tool):
    """The module projects/<project>/tools/<tool>.py (imported once, as `<project>_tools.<tool>`),
    after project discovery (so it may import its project package). A missing project or file
    raises FileNotFoundError naming it."""
    from plugins.projects import import_projects
    path = project_tool_path(project, tool)
    if not path.is_file():
        raise FileNotFoundError(f"no project tool {path} (expected projects/<Project>/tools/<tool>.py)")
    name = f"{project}_tools.{tool}"
    if name in sys.modules:
        return sys.modules[name]
    import_projects()
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def project_settings():
    """{project name: its tools/bench.py module} for each project that has one, in name order."""
    return {name: load_project_tool(name, "bench") for name, d in project_dirs().items()
            if (Path(d) / "tools" / "bench.py").is_file()}
