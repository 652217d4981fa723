# The report's figures 2-7. Each rule reads only what its figure plots, so a plotting option or a new
# rescale factor redraws only the figures that depend on it.

rule fig2:
    input:
        **split_files("test"),
        train_crops="results/data/train_crops.npy",
        train_index="results/data/train.parquet",
        val_crops="results/data/val_crops.npy",
        val_index="results/data/val.parquet",
        weights=weights_file(),
        **MODEL_FILES,
    output:
        **figure_outputs(2),
    params:
        plot=plot_params(),
        example_crops=canonical(FIGURES["example_crops"]),
        seed=SEED,
        n_baselines=ATTR["n_baselines"],
        max_pairs=ATTR["max_pairs"],
        device=config["device"],
    log:
        "logs/figures/fig2.log",
    threads: 2
    resources:
        mem_mb=attribution_mem_mb,
        runtime=grows(30),
        gpu=HEAVY_GPU,
    conda:
        ENV
    script:
        "../scripts/fig2.py"


rule fig3:
    input:
        **split_files("test"),
    output:
        **figure_outputs(3),
    params:
        plot=plot_params(),
        example_crops=canonical(FIGURES["example_crops"]),
        layers=FIGURES["fig3_layers"],
        seed=SEED,
    log:
        "logs/figures/fig3.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig3.py"


rule fig4:
    output:
        **figure_outputs(4),
    params:
        plot=plot_params(),
    log:
        "logs/figures/fig4.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig4.py"


rule fig5:
    input:
        summary="results/summary/plain.parquet",
    output:
        **figure_outputs(5),
    params:
        plot=plot_params(),
        reference_json=FIGURES["reference_json"],
    log:
        "logs/figures/fig5.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig5_fig6.py"


rule fig6:
    input:
        summary=f"results/summary/rescaled-{r_label(FIGURES['rescale_r'])}.parquet",
    output:
        **figure_outputs(6),
    params:
        plot=plot_params(),
        reference_json=FIGURES["reference_json"],
        r=FIGURES["rescale_r"],
    log:
        "logs/figures/fig6.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig5_fig6.py"


rule fig7:
    input:
        paired=f"results/summary/paired-{r_label(FIGURES['rescale_r'])}.parquet",
    output:
        **figure_outputs(7),
    params:
        plot=plot_params(),
        r=FIGURES["rescale_r"],
    log:
        "logs/figures/fig7.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig7.py"
