# VOC annotations (or ILSVRC2012 val, data.source imagenet: layersweep.imagenet) -> one uint8 array of crop_size x crop_size samples per split, plus a parquet index.
# data.samples (crops | images) applies to the evaluated test split; the head is trained, and DeepLiftShap's
# baselines drawn, on object crops of train / val in both modes.


# A checkpoint so that `n_images: all` can count the test crops; with a number it acts as a plain rule.
checkpoint crops:
    input:
        voc_ready(),
    output:
        **split_files("{split}"),
    params:
        voc_dir=VOC_DIR,
        crop_size=DATA["crop_size"],
        samples=lambda wc: DATA["samples"] if wc.split == "test" else "crops",
        source=DATA["source"],
        imagenet=imagenet_settings(),  # data.source imagenet: the local copy and the selection ({} for VOC)
    log:
        log_of("crops", "split"),
    benchmark:
        bench_of("crops", "split")
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: int((1000 + 8000 * (DATA["crop_size"] / 224) ** 2) * attempt),
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        ENV
    script:
        "../scripts/crops.py"
