"""relevel: graded search-relevance training data made by machine."""
from relevel.caches import route_library_caches

__version__ = "0.1.0"

route_library_caches()  # before any submodule imports matplotlib or torch
