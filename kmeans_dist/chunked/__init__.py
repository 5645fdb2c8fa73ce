"""The chunked driver and its passes: one layer serves fit, seeding, preprocessing, metrics and selection.

:mod:`~kmeans_dist.chunked.driver` cuts the input into canonical row blocks (the same blocks whatever the
input's chunking) and runs per-block kernels on them, in process, on persisted blocks on Dask workers, or
streamed from the store; partials are combined by the one fixed reduction tree of
:mod:`kmeans_dist.kernels.tree`, so every result is bit-identical whatever the chunking and the number of
workers.  The passes built on it:

- :mod:`~kmeans_dist.chunked.lloyd`: full Lloyd, mini-batch steps, the final labelling pass;
- :mod:`~kmeans_dist.chunked.seeding`: k-means||, k-means++, random and random-partition seeding;
- :mod:`~kmeans_dist.chunked.restarts`: k-means with restarts on any transport;
- :mod:`~kmeans_dist.chunked.preprocessing`: moments and standardization;
- :mod:`~kmeans_dist.chunked.workers`: the memory allocator of Dask workers for streamed passes.
"""
from .driver import CollectiveBlocks, DaskBlocks, LocalBlocks, StreamBlocks, get_client, make_blocks, resolve_block_rows
from .lloyd import LloydResult, data_stats, final_pass, lloyd, lloyd_on_blocks, minibatch_on_blocks, minibatch_step
from .restarts import kmeans_on_blocks
from .preprocessing import moments, standardize, standardize_store
from .seeding import SEEDING_METHODS, init_centers, seed_from
from .workers import MALLOC_ENV, tune_worker_malloc

__all__ = [
    "CollectiveBlocks", "DaskBlocks", "LocalBlocks", "StreamBlocks", "get_client", "make_blocks", "resolve_block_rows",
    "LloydResult", "data_stats", "final_pass", "lloyd", "lloyd_on_blocks", "minibatch_on_blocks", "minibatch_step",
    "kmeans_on_blocks",
    "moments", "standardize", "standardize_store", "SEEDING_METHODS", "init_centers", "seed_from",
    "MALLOC_ENV", "tune_worker_malloc",
]
