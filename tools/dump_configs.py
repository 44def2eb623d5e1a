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


def dump_configs(out_dir, configs=None, repo=REPO):
    """Write OUT_DIR/<config>.yaml for each config (relative to `repo`); returns the written paths.
    A config that does not load raises its own error, with a note naming the file."""
    import plugins  # noqa: F401  (fastreid shims first)
    import datasets_ext  # noqa: F401
    from plugins.config import get_dg_cfg
    written = []
    for config in configs if configs is not None else shipped_configs(repo):
        try:
            cfg = get_dg_cfg(os.path.join(repo, config))
        except Exception as e:
            e.add_note(f"while loading {config} (tools/dump_configs.py)")
            raise
        dst = os.path.join(out_dir, config + ".yaml")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w") as f:
            f.write(cfg.dump())
        written.append(dst)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("configs", nargs="*", help="paths relative to the repository root (default: all)")
    args = parser.parse_args(argv)
    written = dump_configs(args.out_dir, args.configs or None)
    print(f"{len(written)} merged configs written under {args.out_dir}")


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
