# The report's figures 2-7, fig8 (every metric but core) and the atlas. Each rule reads only what its figure
# plots, so a plotting option or a new rescale factor redraws only the figures that depend on it.

rule fig2:
    input:
        **eval_files(),
        train_crops="results/data/train_crops.npy",
        train_index="results/data/train.parquet",
        val_crops="results/data/val_crops.npy",
        val_index="results/data/val.parquet",
        weights=weights_file(),
        **MODEL_FILES,
    output:
        **figure_outputs(2),
    params:
        model=MODEL_SPEC,
        plot=plot_params(),
        example_crops=canonical(FIGURES["example_crops"]),
        layer=FIGURES.get("fig2_layer", 18),
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
        **eval_files(),
    output:
        **figure_outputs(3),
    params:
        plot=plot_params(),
        example_crops=canonical(FIGURES["example_crops"]),
        layers=FIGURES["fig3_layers"],
        arch=ARCH,
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
        arch=ARCH,
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
        summary=metric_summary("core"),
    output:
        **figure_outputs(5),
    params:
        plot=plot_params(),
        arch=ARCH,
        reference_json=FIGURES["reference_json"],
        methods=FIG_METHODS,
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
        summary=metric_summary("core", f"rescaled-{r_label(FIGURES['rescale_r'])}"),
    output:
        **figure_outputs(6),
    params:
        plot=plot_params(),
        arch=ARCH,
        reference_json=FIGURES["reference_json"],
        r=FIGURES["rescale_r"],
        methods=FIG_METHODS,
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


if COMPARE:  # figures.compare null: no fig7, no paired differences

    rule fig7:
        input:
            paired=f"results/summary/paired-{r_label(FIGURES['rescale_r'])}.parquet",
        output:
            **figure_outputs(7),
        params:
            plot=plot_params(),
            arch=ARCH,
            r=FIGURES["rescale_r"],
            compare=list(COMPARE),
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


# Every metric of metrics.compute but core (fig5 draws it) against the layer, in the style of fig5.
rule fig8:
    input:
        summaries=[metric_summary(m) for m in FIG8_METRICS],
    output:
        **figure_outputs(8),
    params:
        plot=plot_params(),
        arch=ARCH,
        metrics=FIG8_METRICS,
        methods=FIG_METHODS,
    log:
        "logs/figures/fig8.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(5),
    conda:
        ENV
    script:
        "../scripts/fig8.py"


# Every configured method at every layer on the example crops, read from the attribution shards that
# hold them (no attribution is recomputed).
rule atlas:
    input:
        **eval_files(),
        shards=atlas_shards,
    output:
        pdf="figures/atlas.pdf",
        png=report("figures/atlas.png", caption="../report/atlas.rst", category="Figures"),
        table="figures/tables/atlas.csv",
    params:
        plot=plot_params(),
        example_crops=canonical(FIGURES["example_crops"]),
        seed=SEED,
        methods=METHODS,
        arch=ARCH,
    log:
        "logs/figures/atlas.log",
    group:
        "summaries"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(15),
    conda:
        ENV
    script:
        "../scripts/atlas.py"
