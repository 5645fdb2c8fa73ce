"""Choosing k on chunked data: blobs generated straight into a Zarr store, then elbow (Kneedle),
silhouette, Calinski-Harabasz, Davies-Bouldin and the gap statistic on a 2-process Dask cluster.

    python examples/choose_k.py [--out DIR] [--n 20000] [--data blobs|anisotropic|...]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "kmeans-dist-examples"))
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--data", default="blobs")
    ap.add_argument("--kmax", type=int, default=8)
    ap.add_argument("--B", type=int, default=5)
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from kmeans_dist.data import datasets as D
    from kmeans_dist.selection import choose_k

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        url = D.make_dataset(args.data, args.n, random_state=0, chunk_rows=max(1000, args.n // 4),
                             url=Path(tmp) / f"{args.data}.zarr")
        res = choose_k(url, range(1, args.kmax + 1), gap_B=args.B, n_init=1, client=client,
                       plot=out / f"choose_k_{args.data}.png")
    print(res.table[["inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "gap", "gap_s"]]
          .to_dataframe().round(4))
    print("recommended:", res.recommendations)
    print(f"figure: {out / f'choose_k_{args.data}.png'}")


if __name__ == "__main__":
    main()
