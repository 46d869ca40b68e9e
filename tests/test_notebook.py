"""ComputeTaskEmbedding.ipynb: run headless in the demo setting, as `jupyter nbconvert --execute` would,
and stored without outputs."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOK = REPO_ROOT / "ComputeTaskEmbedding.ipynb"
TASKS = ("squad", "squad_v2", "duorc-p", "duorc-s", "drop", "sst2")
# Appended to the in-memory copy only: which Python the kernel runs.
KERNEL_PROBE = "import sys\nprint('kernel prefix:', sys.prefix)"


def kernel_manager() -> KernelManager:
    """A manager that starts ipykernel on the interpreter running the tests.

    With no kernel folders, KernelSpecManager offers only ipykernel's built-in ("native") python3
    spec, whose command is sys.executable; a python3 spec installed in a user or system Jupyter
    folder could name another Python, without this project's packages.
    """
    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def outputs_text(cell) -> str:
    """Everything a cell printed (stdout and stderr; nothing for a markdown cell)."""
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.output_type == "stream")


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_checkpoint):
    """The notebook run once in the demo setting from an empty folder; (notebook, its TaskEmb folder)."""
    work = tmp_path_factory.mktemp("notebook")
    emb_dir = work / "TaskEmb"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(KERNEL_PROBE))
    env = {**os.environ, "T2V_SETTING": "demo", "T2V_EMB_DIR": str(emb_dir), "T2V_TINY_MODEL": str(tiny_checkpoint),
           # Tiny tensors: a second intra-op thread only waits for a core on a shared 2-core machine.
           "OMP_NUM_THREADS": "1"}
    client = nbclient.NotebookClient(nb, km=kernel_manager(), timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell's traceback, if a cell fails
    return nb, emb_dir


@pytest.mark.slow
def test_the_kernel_is_this_interpreter(executed):
    nb, _ = executed
    assert f"kernel prefix: {sys.prefix}" in outputs_text(nb.cells[-1])


@pytest.mark.slow
def test_every_task_is_embedded_and_the_heatmap_is_saved(executed):
    nb, emb_dir = executed
    for task in TASKS:
        assert (emb_dir / task / "embedding.npy").is_file(), task
        metadata = json.loads((emb_dir / task / "embedding.json").read_text())
        assert metadata["noise_floor"]["task"] is not None, task
    heatmap = emb_dir / "task_distances.png"
    assert heatmap.stat().st_size > 0
    assert any("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)


@pytest.mark.slow
def test_the_distance_matrix_is_a_distance_matrix(executed):
    from task2vec.analysis.distances import pairwise_distances
    from task2vec.embedding.io import load_task_embedding

    nb, emb_dir = executed
    vectors = np.stack([load_task_embedding(emb_dir, task).vector for task in TASKS])
    matrix = pairwise_distances(vectors, "task2vec")
    assert np.array_equal(matrix, matrix.T)
    assert np.all(np.diag(matrix) == 0)
    assert np.all((matrix >= 0) & (matrix <= 1))
    assert np.all(matrix[~np.eye(len(TASKS), dtype=bool)] > 0)  # six different tasks
    printed = "".join(outputs_text(cell) for cell in nb.cells)
    rows = printed.split("task2vec distances:\n")[1].splitlines()[1:1 + len(TASKS)]
    shown = np.array([[float(value) for value in row.split()[1:]] for row in rows])
    np.testing.assert_allclose(shown, matrix, atol=5e-5)  # printed with 4 decimals


@pytest.mark.slow
def test_the_noise_floor_and_its_verdict_are_printed(executed):
    nb, _ = executed
    printed = "".join(outputs_text(cell) for cell in nb.cells)
    assert "noise floor (task2vec" in printed
    for task in TASKS:
        assert f"  {task}: d(e, e reseeded) = " in printed
    verdicts = [line for line in printed.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1 and "15 task pairs" in verdicts[0]
    pairs = [line for line in printed.splitlines() if " vs " in line and "corrected" in line]
    assert len(pairs) == 15   # every pair: raw distance, bias removed, corrected distance, resolved or not
    assert all("bias removed" in line for line in pairs)
    assert all(line.rstrip().endswith(("resolved", "NOT resolved")) for line in pairs)


def test_the_stored_notebook_has_no_outputs_and_reads_its_setting():
    document = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert document["nbformat"] == 4
    code = [cell for cell in document["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    parameters = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(parameters) == 1
    assert 'SETTING = os.environ.get("T2V_SETTING", "real")' in "".join(parameters[0]["source"])
