# Downloads (localrules: only the login node has a network on most clusters) and the demo's fake VOC.


rule download_voc:
    output:
        "resources/downloads/{archive}.tar",
    params:
        spec=lambda wc: canonical(archive_spec(wc.archive)),
    log:
        "logs/download_voc/{archive}.log",
    threads: 1
    resources:
        mem_mb=grows(500),
        runtime=grows(120),
    script:
        "../scripts/download_voc.py"


rule extract_voc:
    input:
        lambda wc: f"resources/downloads/{Path(DATA['archives'][wc.which]['file']).stem}.tar",
    output:
        "resources/voc/.extracted-{which}",
    log:
        "logs/extract_voc/{which}.log",
    threads: 1
    resources:
        mem_mb=grows(500),
        runtime=grows(60),
    script:
        "../scripts/extract_voc.py"


rule download_weights:
    output:
        "resources/weights/{weights_file}",
    params:
        spec=lambda wc: canonical(checkpoint_spec(wc.weights_file)),
    log:
        "logs/download_weights/{weights_file}.log",
    threads: 1
    resources:
        mem_mb=grows(500),
        runtime=grows(30),
    script:
        "../scripts/download_weights.py"


rule synthetic_voc:
    output:
        directory(DATA["voc_root"] or "resources/VOCsynthetic"),
    params:
        synthetic=canonical(DATA.get("synthetic")),
    log:
        "logs/synthetic_voc/synthetic_voc.log",
    threads: 1
    resources:
        mem_mb=grows(1000),
        runtime=grows(10),
    script:
        "../scripts/synthetic_voc.py"
