import json

from layersweep.script_runner import run_script


def main(sm):
    import pandas as pd

    from layersweep.groundtruth import per_map_table
    from layersweep.io import atomic_path, write_parquet

    p = sm.params
    tables = {m: pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) for m, files in p.shards.items()}
    per_map, counts = per_map_table(tables, pd.read_parquet(sm.input.predictions), dict(p.columns))
    counts["n_maps"] = int(len(per_map))
    write_parquet(per_map, sm.output.per_map)
    with atomic_path(sm.output.counts) as tmp:
        tmp.write_text(json.dumps(counts, indent=2))


run_script(snakemake, main)
