"""Root pytest configuration: skip the torch backend's doctests where torch is absent."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["src/softxent/torch/*"]
