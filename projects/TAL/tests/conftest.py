"""TAL's test setup: the `tal` package is importable in every test module (the root conftest's
project discovery puts projects/TAL on sys.path and registers its pieces), and the session's tiny
synthetic benchmark is the root conftest's `synthetic_root`. TAL's tests share no other helpers."""
import tal  # noqa: F401  (registration: TALTrainer, the TAL meta-architecture, TAL's config keys)
