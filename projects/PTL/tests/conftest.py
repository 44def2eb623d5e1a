"""PTL's test setup: the `ptl` package is importable in every test module (the root conftest's
project discovery puts projects/PTL on sys.path and registers its pieces), and the session's tiny
synthetic benchmark is the root conftest's `synthetic_root`. PTL's tests share no other helpers."""
import ptl  # noqa: F401  (registration: PTLTrainer, the PTL meta-architecture, PTL's config keys)
