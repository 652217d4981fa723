"""layersweep: layer-by-layer attribution maps as a Snakemake pipeline."""
