# data.source: shapes -> the ground-truth shapes dataset (layersweep/shapes.py, docs/groundtruth.md) in the VOC
# path's layout: results/data/{split}_crops.npy and {split}.parquet, plus {split}_masks.npy, the per-sample
# ground-truth masks. A checkpoint named as the VOC path's, so that every later stage reads it alike.
import dataclasses

from layersweep.shapes import background_source, spec_from_config

try:
    SHAPES_SPEC = spec_from_config(DATA)
    SHAPES_BACKGROUND = background_source(SHAPES_SPEC)  # auto -> voc or procedural, decided once here
except LayersweepError as exc:
    sys.exit(f"layersweep: {exc}")


checkpoint crops:
    output:
        **split_files("{split}"),
        masks="results/data/{split}_masks.npy",
    params:
        spec=canonical(dict(dataclasses.asdict(SHAPES_SPEC), background=SHAPES_BACKGROUND)),
    log:
        log_of("crops", "split"),
    benchmark:
        bench_of("crops", "split")
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: int((1000 + 4000 * (DATA["crop_size"] / 224) ** 2) * attempt),
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        ENV
    script:
        "../scripts/shapes.py"
