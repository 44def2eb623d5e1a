"""Run a command module of any project: `python -m plugins.run <pkg>.<module> [args...]`
(e.g. `python -m plugins.run paoa.weak_labels --help`). Projects live outside the installed
packages (projects/<Name>/<pkg>), so their modules are found through project discovery."""
import runpy
import sys

import plugins  # noqa: F401
import datasets_ext  # noqa: F401
from plugins.projects import import_projects


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    import_projects()
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
