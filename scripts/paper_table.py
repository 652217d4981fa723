import pandas as pd

from layersweep.script_runner import run_script


def main(sm):
    from layersweep.io import atomic_path
    from layersweep.tables import (cosine_summary, load_paper_numbers, paper_table, table_html,
                                   table_markdown)

    p = sm.params
    spec = p.spec
    ours = [pd.read_parquet(f).assign(study=study) for study, files in p.summary_files.items() for f in files]
    if sm.input.cosine:
        per_image = pd.read_parquet(sm.input.cosine)
        for study, g in per_image.groupby("study", sort=False):
            s = p.summary[study]
            ours.append(cosine_summary(g, n_boot=s["n_boot"], ci=s["ci"], seed=s["seed"]).assign(study=study))
    table = paper_table(p.name, spec, load_paper_numbers(sm.input.numbers), pd.concat(ours, ignore_index=True),
                        p.studies)
    demo = any(cfg.get("demo") for cfg in p.study_configs.values())
    with atomic_path(sm.output.csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(sm.output.md) as tmp:
        tmp.write_text(table_markdown(spec["title"], table))
    with atomic_path(sm.output.html) as tmp:
        tmp.write_text(table_html(spec["title"], table, p.study_configs, p.study_files, demo=demo))


run_script(snakemake, main)
