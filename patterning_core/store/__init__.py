"""The χ store (one Zarr group per run, read and written through xarray), several stores
compared as runs, its map (readouts written back next to χ: ``chi_map``), export to
CSV/netCDF, and workloads (everything a χ shard needs, rebuilt from a small JSON spec).

May import sampling, estimators, model and data.
"""

from patterning_core.store.chi_map import open_chi_map, write_chi_map
from patterning_core.store.chi_store import (
    StoreError,
    StoreMissingError,
    assemble_chi,
    completed,
    create_store,
    open_chi,
    read_stats,
    store_summary,
    write_chi,
    write_shard,
)
from patterning_core.store.runs import open_runs

__all__ = [
    "StoreError",
    "StoreMissingError",
    "assemble_chi",
    "completed",
    "create_store",
    "open_chi",
    "open_chi_map",
    "open_runs",
    "read_stats",
    "store_summary",
    "write_chi",
    "write_chi_map",
    "write_shard",
]
