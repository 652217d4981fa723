import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.attribution import read_attribution_shard
    from layersweep.io import write_parquet
    from layersweep.tables import cosine_per_image

    p = sm.params
    ref = p.reference
    layer = p.layers[ref["study"]]
    reference = [read_attribution_shard(path) for path in p.shards["reference"]]  # once, for every method
    parts = []
    for key, shards in p.shards.items():
        if key == "reference":
            continue
        study, method = key.split("/")
        if p.layers[study] != layer:
            from layersweep.errors import LayersweepError
            raise LayersweepError(f"config/tables.yaml reads study '{study}' at layer {p.layers[study]} but the "
                                  f"reference at layer {layer}; the cosine compares weights of one layer.")
        parts.append(cosine_per_image(method, shards, reference, layer).assign(study=study))
    write_parquet(pd.concat(parts, ignore_index=True), sm.output[0])


run_script(snakemake, main)
