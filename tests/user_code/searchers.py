"""A Ray Tune searcher as Tune's own wrappers of optional libraries are written (HyperOptSearch, BayesOptSearch):
its constructor asserts that the library is installed."""

from ray.tune.search import Searcher

nosuchlib = None  # what `try: import nosuchlib except ImportError: nosuchlib = None` leaves


class NeedsItsLibrary(Searcher):
    def __init__(self, **kwargs):
        assert nosuchlib is not None, "NoSuchLib must be installed! Run `pip install nosuchlib`."
        super().__init__(**kwargs)
