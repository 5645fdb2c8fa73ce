"""In-memory kernels: the per-block computations of the k-means family, written once over the array API.

Every function here takes arrays of one namespace ``xp`` (NumPy, CuPy, array-api-strict, ...) and never
validates its input: validation happens once, in :mod:`kmeans_dist.estimators`.  Per-block kernels return
small *partials* (dicts of host NumPy arrays) that are merged in a fixed order by the reduction tree of
:mod:`kmeans_dist.kernels.tree`; the chunked driver (:mod:`kmeans_dist.chunked`) maps them over blocks.

Modules, from the bottom up:

- :mod:`~kmeans_dist.kernels.xp`: the array namespace of the inputs (CuPy imported lazily);
- :mod:`~kmeans_dist.kernels.distances`: row norms, squared distances, nearest centers;
- :mod:`~kmeans_dist.kernels.sparse`: the same for scipy.sparse CSR blocks (sparse-dense products, sums from
  the CSR structure), dispatched to by the dense kernels;
- :mod:`~kmeans_dist.kernels.tree`: the fixed reduction tree;
- :mod:`~kmeans_dist.kernels.stats`: per-block moments and finiteness;
- :mod:`~kmeans_dist.kernels.fused`, :mod:`~kmeans_dist.kernels.hamerly`: compiled (Numba) Lloyd blocks,
  plain and with Hamerly's bounds;
- :mod:`~kmeans_dist.kernels.lloyd`: one block's share of a Lloyd or mini-batch step, and the center update;
- :mod:`~kmeans_dist.kernels.inmemory`: k-means++ and Lloyd on one in-memory array.
"""
from .distances import assign_labels, nearest_with_norms, row_norms_sq, row_norms_sq_cached, sq_distances
from .inmemory import KMeansResult, kmeans_inmemory, kmeans_plusplus, lloyd_inmemory
from .lloyd import combine_lloyd_partials, finalize_centers, hamerly_partial, lloyd_partial, minibatch_update
from .stats import NonFiniteError, absolute_tolerance, check_stats, combine_stats, finish_stats, stats_chunk
from .tree import tree_combine, tree_root, tree_subtrees
from .xp import get_namespace, gpu_available, is_numpy_namespace, to_numpy

__all__ = [
    "assign_labels", "nearest_with_norms", "row_norms_sq", "row_norms_sq_cached", "sq_distances",
    "KMeansResult", "kmeans_inmemory", "kmeans_plusplus", "lloyd_inmemory",
    "combine_lloyd_partials", "finalize_centers", "hamerly_partial", "lloyd_partial", "minibatch_update",
    "NonFiniteError", "absolute_tolerance", "check_stats", "combine_stats", "finish_stats", "stats_chunk",
    "tree_combine", "tree_root", "tree_subtrees",
    "get_namespace", "gpu_available", "is_numpy_namespace", "to_numpy",
]
