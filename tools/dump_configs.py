"""Write the fully merged config of every shipped YAML, as `train_net.py` builds it (fastreid's
defaults + the toolbox keys + every project's keys, then `merge_from_file`), one file each:

    python -m tools.dump_configs OUT_DIR [CONFIG ...]

OUT_DIR/<config path>.yaml holds `cfg.dump()` (sorted keys). Without CONFIG: every `configs/**/*.yml`
and `projects/*/configs/**/*.yml`. Used to check that a re-organisation of the configs (#24 item 6:
bases only, at most 4 levels) changes no experiment: dump on the old tree, dump on the new one, and
`diff -r` the two directories (they must be identical but for added files).
"""
import argparse
import glob
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shipped_configs(repo=REPO):
    """Every shipped config, as paths relative to `repo`, sorted."""
    return sorted(os.path.relpath(p, repo) for pattern in ("configs/**/*.yml", "projects/*/configs/**/*.yml")
                  for p in glob.glob(os.path.join(repo, pattern), recursive=True))


def _inside_repo(config, repo):
    """`config` (relative to `repo`, absolute, or relative to the working directory) as a path
    relative to `repo`: OUT_DIR mirrors the repository's layout, so a config outside it would be
    written outside OUT_DIR (an absolute path beside the config itself). Raises ValueError then."""
    path = config if os.path.isabs(config) else os.path.join(repo, config)
    if not os.path.isabs(config) and not os.path.exists(path) and os.path.exists(config):
        path = os.path.abspath(config)   # relative to the working directory
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(repo))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"dump_configs: {config} is outside the repository {repo}; OUT_DIR mirrors the "
                         "repository's paths (give configs under it, relative to it or absolute)")
    return rel


def dump_configs(out_dir, configs=None, repo=REPO):
    """Write OUT_DIR/<config>.yaml for each config (a path relative to `repo`, or an absolute /
    working-directory path inside `repo`); returns the written paths. A config that does not load
    raises its own error, with a note naming the file; one outside `repo` raises ValueError."""
    import plugins  # noqa: F401  (fastreid shims first)
    import datasets_ext  # noqa: F401
    from plugins.config import get_dg_cfg
    written = []
    for config in configs if configs is not None else shipped_configs(repo):
        rel = _inside_repo(config, repo)
        try:
            cfg = get_dg_cfg(os.path.join(repo, rel))
        except Exception as e:
            e.add_note(f"while loading {config} (tools/dump_configs.py)")
            raise
        dst = os.path.join(out_dir, rel + ".yaml")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as f:
            f.write(cfg.dump())
        written.append(dst)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("configs", nargs="*", help="paths under the repository (relative to its root, or absolute; default: all)")
    args = parser.parse_args(argv)
    written = dump_configs(args.out_dir, args.configs or None)
    print(f"{len(written)} merged configs written under {args.out_dir}")


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
