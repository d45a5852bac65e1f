# Not an endpoint module: discovery must not import it (it would fail loudly if it did).
raise RuntimeError("utils.py was imported during discovery")
