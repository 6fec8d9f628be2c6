"""Root pytest configuration: skip the torch backend's doctests where torch is absent."""

import importlib.util

#: What needs torch to run its examples: the backend's modules and the documents about it.
NEEDS_TORCH = ["src/softxent/torch/*", "docs/torch.md", "docs/distributed.md"]

collect_ignore_glob = [] if importlib.util.find_spec("torch") else NEEDS_TORCH
