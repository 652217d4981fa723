from layersweep.script_runner import run_script


def main(sm):
    import pandas as pd

    from layersweep.figures.groundtruth import metric_degradation_figure

    metric_degradation_figure(pd.read_parquet(sm.input[0]), sm.output.pdf, sm.output.png, sm.output.table,
                              study=sm.params.study)


run_script(snakemake, main)
