# Resources: memory and wall time per job, sized from the shard, the crop size and the cost model, growing
# with each retry; the directives every rule shares (the small jobs' sizes, the conda env).

ENV = "../envs/layersweep.yaml"  # for --software-deployment-method conda; the venv has the same pins


def _pixels_factor():
    return (DATA["crop_size"] / 224) ** 2


def grows(base):
    """A fixed estimate that doubles, triples... on each retry (mem_mb or runtime of the small jobs)."""
    return lambda wildcards, attempt: base * attempt


def attribution_mem_mb(wildcards, attempt):
    # the model's parameters plus the rows the method's pass holds at once (layersweep.sizing);
    # the cost rule and fig2 have no method wildcard and are sized as a DeepLiftShap job
    return FACTS.attribution_mem_mb[getattr(wildcards, "method", "deepliftshap")] * attempt


def attribution_runtime(wildcards, attempt):
    # the cost model's forecast for one shard of this method at the assumed throughput, doubled, + 10 min
    return FACTS.attribution_runtime_min[wildcards.method] * attempt


def metric_runtime(wildcards, attempt):
    # forwards per map x layers, and attribution passes per crop, at a generous CPU rate of the crop size
    return FACTS.metric_runtime_min[(wildcards.metric, wildcards.method)] * attempt


def scoring_mem_mb(wildcards, attempt):
    # one forward batch of perturbed images, no gradients: ~60 MB per image at 224 px
    return int((1500 + 60 * METRICS["batch_size"] * _pixels_factor()) * attempt)


def crops_mem_mb(wildcards, attempt):
    # the split's uint8 crops at crop_size, held at once
    return int((1000 + 8000 * _pixels_factor()) * attempt)


# the summaries and figures 3-8: one CPU, a little memory, minutes
SMALL_JOB = dict(mem_mb=grows(1000), runtime=grows(5))


def use_the_conda_env(defined):
    """With --software-deployment-method conda, the rules that run a script run it in envs/layersweep.yaml:
    set here once for the rules defined so far, instead of a `conda:` line in each rule."""
    for each in defined:
        if each.script and each.conda_env is None:
            each.conda_env = ENV
