"""Run a project's command: `python -m tools.run <Project> <tool> [args...]` runs
`main(args)` of projects/<Project>/tools/<tool>.py (e.g. `python -m tools.run ADIN bench --iters 8`).
"""
import sys

from tools import load_project_tool, project_dirs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) < 2:
        sys.exit(f"{__doc__}\nprojects: {', '.join(sorted(project_dirs()))}")
    try:
        mod = load_project_tool(argv[0], argv[1])
    except FileNotFoundError as e:   # a wrong project / tool name: the message, not a traceback
        sys.exit(str(e))
    if not hasattr(mod, "main"):
        sys.exit(f"{mod.__file__} has no main(argv): not a command")
    return mod.main(argv[2:])


if __name__ == "__main__":
    main()
