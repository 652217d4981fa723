import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation (4-7x slower on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# The suite's two real Snakemake runs, each run once per pytest invocation and read by every test that needs its
# outputs (test_pipeline, test_studies, test_kill). Tests that change files in them work on a copy or restore.
@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    from workflow import run_demo
    return run_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory):
    from workflow import run_demo_study
    return run_demo_study(tmp_path_factory.mktemp("demo-study"))
