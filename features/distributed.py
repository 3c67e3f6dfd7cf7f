"""Features on Dask, for data that outgrows one machine: the same `build_features`, run per partition.

A partition is a range of citizen ids with every row of those citizens in the five tables (and the
caseworkers their measurements name), so a citizen's history is never split and every history
feature is exactly what the in-memory path computes. Partitions are read one per task, either from
the measurement store with key-range queries (`features.store.load_citizen_range`) or from a folder
of Parquet tables (each `NAME.parquet` a file or a folder of files) with a range filter that Arrow
pushes down to the row groups: no process ever loads a whole table.

The one piece of `build_features` that looks across citizens is the pooled IPCW weight, whose
Kaplan–Meier curve is estimated over all rows built together. Here it is a reduction: each partition
counts its censoring times (`features.labels.censoring_counts`), the counts are summed, and the one
curve is applied per partition, so the weights equal the in-memory ones.

Dask is imported inside the functions that use it: importing this module starts nothing.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bip.errors import UserError
from features.build import build_features
from features.dataset import COLUMNS, TABLES, Dataset, empty_dataset
from features.labels import (
    add_months,
    censoring_counts,
    merged_counts,
    pooled_censoring,
    survival_of_counts,
    weights_of_curve,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

LOCAL = "local"
"""The `--dask` value that starts a LocalCluster on this machine instead of connecting to a scheduler."""
CITIZENS_PER_PARTITION = 20_000
"""Citizens per partition: about 140,000 measurements and 170 MB of feature rows at BIP's rate."""
CONNECT_TIMEOUT = "10s"
MAX_LOCAL_WORKERS = 4


# --- the cluster -----------------------------------------------------------------------------------


def local_cluster_shape(cpus: int, n_workers: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) for a LocalCluster: a few worker processes (pandas and the feature
    code hold the GIL much of the time) sharing the machine's cores."""
    workers = n_workers or max(1, min(MAX_LOCAL_WORKERS, cpus))
    return workers, max(1, cpus // workers)


@contextmanager
def dask_client(
    address: str, processes: bool = True, n_workers: int | None = None, timeout: str = CONNECT_TIMEOUT
) -> Iterator[Client]:
    """A Dask client, closed on exit: `local` starts a LocalCluster sized to this machine (stopped on
    exit too); any other value is a scheduler address (`tcp://host:8786`) to connect to.

    UserError when the scheduler cannot be reached.
    """
    import dask

    # pandas' own `str` columns are Arrow-backed already; Dask's conversion would turn them into the
    # other string dtype (missing = NA), so that a frame would no longer equal the in-memory one.
    with (
        dask.config.set({"dataframe.convert-string": False}),
        client_for(address, processes, n_workers, timeout) as client,
    ):
        yield client


@contextmanager
def client_for(address: str, processes: bool, n_workers: int | None, timeout: str) -> Iterator[Client]:
    """The client of `dask_client`, without the Dask settings around it."""
    from distributed import Client, LocalCluster

    if address == LOCAL:
        workers, threads = local_cluster_shape(os.cpu_count() or 1, n_workers)
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=threads, processes=processes, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise UserError(
            f"cannot reach the Dask scheduler at {address!r} ({error}); give the address the scheduler "
            "prints (tcp://HOST:8786), or use --dask local for a cluster on this machine (docs/dask.md)"
        ) from error
    with client:
        yield client


def cluster_description(client: Client) -> dict[str, Any]:
    """Workers, threads and memory of the cluster behind `client`, for the run's parameters."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return {
        "dask_workers": len(workers),
        "dask_threads": sum(w["nthreads"] for w in workers),
        "dask_memory_gib": round(sum(w["memory_limit"] or 0 for w in workers) / 2**30, 1),
    }


# --- where partitions come from -----------------------------------------------------------------------


@dataclass(frozen=True)
class CitizenRange:
    """Citizens with first <= citizen_id < stop; None leaves that side open (the first and last
    partitions), so that every id, even one no citizen row has, falls in exactly one partition."""

    first: str | None
    stop: str | None
    number: int = 1  # 1-based, of `total`: how messages name the partition (its bounds are citizens' ids)
    total: int = 1

    def __str__(self) -> str:
        return f"partition {self.number} of {self.total}"


def citizen_ranges(bounds: list[str]) -> list[CitizenRange]:
    """Consecutive ranges from the sorted first ids of the partitions (one range when there are none)."""
    starts: list[str | None] = [None, *bounds[1:]]
    stops: list[str | None] = [*bounds[1:], None]
    return [
        CitizenRange(first, stop, number, len(starts))
        for number, (first, stop) in enumerate(zip(starts, stops, strict=True), start=1)
    ]


@dataclass(frozen=True)
class StoreSource:
    """The measurement store: partitions by key-range queries."""

    url: str

    def ranges(self, citizens_per_partition: int) -> list[CitizenRange]:
        from features.store import citizen_bounds

        return citizen_ranges(citizen_bounds(self.url, citizens_per_partition))

    def read(self, part: CitizenRange) -> Dataset:
        from features.store import load_citizen_range

        return load_citizen_range(self.url, part.first, part.stop)

    def __str__(self) -> str:
        return "the measurement store"


@dataclass(frozen=True)
class ParquetSource:
    """A dataset folder whose five tables are Parquet: `NAME.parquet`, a file or a folder of files."""

    folder: Path

    def path(self, table: str) -> Path:
        return self.folder / f"{table}.parquet"

    def ranges(self, citizens_per_partition: int) -> list[CitizenRange]:
        import pyarrow.compute as pc

        # Only the id column of the citizens table is read here, to cut it into ranges.
        ids = parquet_table(self.path("citizens")).to_table(columns=["citizen_id"]).column("citizen_id")
        distinct = pc.unique(ids.drop_null())
        ordered = distinct.take(pc.sort_indices(distinct)).to_pylist()
        return citizen_ranges(ordered[::citizens_per_partition])

    def read(self, part: CitizenRange) -> Dataset:
        from features.contract import checked_dataset

        frames = {name: self.rows(name, "citizen_id", part) for name in TABLES if name != "caseworkers"}
        measurements = frames["measurements"]
        named = measurements["caseworker_id"].dropna().unique().tolist() if "caseworker_id" in measurements else []
        frames["caseworkers"] = self.rows("caseworkers", "caseworker_id", named)
        where = str(part)  # not its bounds: they are citizens' ids
        sources = {name: f"{self.path(name).name} ({where}; rows counted within the range)" for name in TABLES}
        return checked_dataset(frames, sources)

    def rows(self, table: str, column: str, wanted: CitizenRange | list[str]) -> pd.DataFrame:
        """The contract columns of `table` (those present) of the rows whose `column` is in `wanted`."""
        import pyarrow.dataset as ds

        data = parquet_table(self.path(table))
        if column not in data.schema.names:
            raise UserError(f"{self.path(table).name} lacks the required column {column} (shared/data-contract.md)")
        present = [c for c in COLUMNS[table] if c in data.schema.names]
        key = ds.field(column)
        where = range_filter(key, wanted) if isinstance(wanted, CitizenRange) else key.isin(wanted)
        return data.to_table(columns=present, filter=where).to_pandas(date_as_object=False)

    def __str__(self) -> str:
        return str(self.folder)


def range_filter(key: Any, part: CitizenRange) -> Any:
    """The Arrow filter first <= key < stop of a range (None for the one range of everything)."""
    conditions = []
    if part.first is not None:
        conditions.append(key >= part.first)
    if part.stop is not None:
        conditions.append(key < part.stop)
    return functools.reduce(operator.and_, conditions) if conditions else None


def parquet_table(path: Path) -> Any:
    """A pyarrow dataset over a Parquet file or a folder of Parquet files; UserError when absent."""
    import pyarrow.dataset as ds

    if not path.exists():
        raise UserError(f"{path} is missing: the distributed path reads the five tables as Parquet (docs/dask.md)")
    return ds.dataset(path, format="parquet")


def parquet_source(folder: Path) -> ParquetSource:
    """A dataset folder as a source of partitions; UserError unless its tables are Parquet."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"dataset folder {folder} does not exist; give a folder holding the five tables")
    csv = [f"{t}.csv" for t in TABLES if (folder / f"{t}.csv").exists()]
    if csv:
        raise UserError(
            f"{folder} holds {', '.join(csv)}: the distributed path reads Parquet, which it can cut by citizen; "
            "ingest the folder and leave out --data, or write it as Parquet (bip export --format parquet)"
        )
    return ParquetSource(folder)


# --- features -------------------------------------------------------------------------------------------


def partition_features(part: CitizenRange, source: StoreSource | ParquetSource, horizon_months: int) -> pd.DataFrame:
    """`build_features` of one partition's citizens (its `ipcw_weight` still over the partition only)."""
    return build_features(source.read(part), horizon_months=horizon_months)


def partitioned_features(
    source: StoreSource | ParquetSource, horizon_months: int, citizens_per_partition: int = CITIZENS_PER_PARTITION
) -> dd.DataFrame:
    """A lazy Dask frame of `build_features` rows, one partition per citizen range, in citizen order.

    Its `ipcw_weight` is per partition: use `feature_frame` for the weights of all rows together.
    """
    import dask.dataframe as dd

    ranges = source.ranges(citizens_per_partition)
    meta = build_features(empty_dataset(), horizon_months=horizon_months)
    return dd.from_map(
        partition_features,
        ranges,
        source=source,
        horizon_months=horizon_months,
        meta=meta,
        label="bip-features",
        enforce_metadata=False,
    )


def horizon_days(measured_on: pd.Series, horizon_months: int) -> np.ndarray:
    """Days from each measurement to the end of its horizon, as `horizon_labels` counts them."""
    day = measured_on.to_numpy().astype("datetime64[D]").astype(np.int64)
    return (add_months(day, horizon_months) - day).astype(float)


def pooled_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """One partition's censoring counts of the pooled IPCW curve, as a small frame."""
    time = frame["time_to_event_days"].to_numpy(dtype=float)
    times, at_time, ended = censoring_counts(time, pooled_censoring(time, frame["event_observed"].to_numpy(bool)))
    return pd.DataFrame({"time": times, "rows": at_time, "ended": ended})


def curve_of(counts: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan–Meier curve of all partitions from their count frames."""
    parts = [(c["time"].to_numpy(float), c["rows"].to_numpy(np.int64), c["ended"].to_numpy(float)) for c in counts]
    return survival_of_counts(*merged_counts(parts))


def with_pooled_weights(frame: pd.DataFrame, curve: tuple[np.ndarray, np.ndarray], horizon_months: int) -> pd.DataFrame:
    """A partition with `ipcw_weight` from the curve of all partitions."""
    weights = weights_of_curve(
        frame["label"].to_numpy(dtype=float),
        frame["time_to_event_days"].to_numpy(dtype=float),
        horizon_days(frame["measured_on"], horizon_months),
        curve,
    )
    return frame.assign(ipcw_weight=weights)


def partition_results(frame: dd.DataFrame, function: Any, *args: Any) -> list[Any]:
    """`function` applied to every partition, the small results gathered in partition order."""
    import dask

    return list(dask.compute(*(dask.delayed(function)(part, *args) for part in frame.to_delayed())))


def feature_frame(
    source: StoreSource | ParquetSource, horizon_months: int, citizens_per_partition: int = CITIZENS_PER_PARTITION
) -> dd.DataFrame:
    """The rows `build_features` gives for the whole dataset, as a Dask frame partitioned by citizen:
    the same rows and values (pooled IPCW weights over all rows), the partitions in citizen order.

    Builds the features twice (once for the censoring counts, once for the rows) rather than hold them
    in the cluster's memory in between; `persist()` the base frame first where memory allows.
    """
    base = partitioned_features(source, horizon_months, citizens_per_partition)
    return weighted_features(base, horizon_months)


def weighted_features(base: dd.DataFrame, horizon_months: int) -> dd.DataFrame:
    """`base` (partitioned_features) with the pooled IPCW weights of all its rows."""
    curve = curve_of(partition_results(base, pooled_counts))
    return base.map_partitions(with_pooled_weights, curve, horizon_months, meta=base._meta)


def write_parquet(frame: dd.DataFrame, out: Path) -> int:
    """Write `frame` as a Parquet dataset folder (one file per partition, readable as one table by
    pandas and Arrow); the number of rows written. UserError when `out` exists and is not empty."""
    import pyarrow.parquet as pq

    out = Path(out)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise UserError(f"{out} already exists; the distributed path writes a Parquet folder: give a new path")
    frame.to_parquet(out, write_index=False)
    return sum(pq.ParquetFile(path).metadata.num_rows for path in sorted(out.glob("*.parquet")))
