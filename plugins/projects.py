"""Project discovery: every package under `projects/<Name>/` is imported (which registers its
modules) and its `add_config(cfg)` is applied, so dropping a project directory in is enough."""
import importlib
import os
import sys
from pathlib import Path

PROJECTS_DIR = Path(__file__).resolve().parent.parent / "projects"


def project_packages(projects_dir=PROJECTS_DIR):
    """[(project dir, package name)] for each `projects/<Name>/<pkg>/__init__.py`."""
    found = []
    dirs = [Path(projects_dir)] + [Path(p) for p in os.environ.get("DGREID_PROJECTS", "").split(os.pathsep) if p]
    for root in dirs:
        if not root.is_dir():
            continue
        for proj in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            for pkg in sorted(proj.iterdir()):
                if (pkg / "__init__.py").is_file() and pkg.name not in ("tests", "configs"):
                    found.append((proj, pkg.name))
    return found


def import_projects():
    modules = []
    for proj, name in project_packages():
        if str(proj) not in sys.path:
            sys.path.insert(0, str(proj))
        modules.append(importlib.import_module(name))
    return modules


def add_project_configs(cfg):
    for mod in import_projects():
        if hasattr(mod, "add_config"):
            mod.add_config(cfg)
    return cfg
