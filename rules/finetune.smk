# model.train: full -> every parameter of the VGG trained on the crops (layersweep/finetune.py): AdamW, early
# stopping on the val loss, the best state kept. Writes the checkpoint the later stages load (as head.pt, the
# head path's file), the history, the test accuracy and each test sample's prediction (the ground-truth tables
# keep the correctly classified ones).


rule finetune:
    input:
        train_crops="results/data/train_crops.npy",
        train_index="results/data/train.parquet",
        val_crops="results/data/val_crops.npy",
        val_index="results/data/val.parquet",
        test_crops="results/data/test_crops.npy",
        test_index="results/data/test.parquet",
        weights=weights_file(),
    output:
        checkpoint="results/model/head.pt",
        history="results/model/history.parquet",
        accuracy="results/model/test_accuracy.json",
        predictions="results/model/test_predictions.parquet",
    params:
        model=MODEL_SPEC,
        width=MODEL["width"],
        lr=MODEL["lr"],
        weight_decay=MODEL["weight_decay"],
        batch_size=MODEL["batch_size"],
        max_epochs=MODEL["max_epochs"],
        patience=MODEL["patience"],
        source=DATA["source"],
        device=config["device"],
    log:
        "logs/finetune/finetune.log",
    benchmark:
        "benchmarks/finetune/finetune.tsv"
    # one thread: on a shared machine, two threads spinning against other jobs made an epoch 10x slower
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 6000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/finetune.py"
