"""The executor on a Dask distributed cluster: 2 worker processes, exact maps, a lost worker, clear errors.

One cluster for the module (starting worker processes takes seconds); the test that kills a worker runs last.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_4dstem import Cancelled, DataError
from napari_4dstem.cli import main
from napari_4dstem.progress import run_steps

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    old = os.environ.get("PYTHONPATH")
    # the workers import napari_4dstem from this checkout and the test reducer from tests/
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HERE)] + ([old] if old else []))
    try:
        lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(lc)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    yield client
    client.close()
    lc.close()


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory):
    """A small uint16 scan with a bright disc (Poisson counts, some near the top of the range)."""
    rng = np.random.default_rng(3)
    ii, jj = np.indices((24, 24))
    disc = np.hypot(ii - 11.5, jj - 12.0) < 6
    lam = np.where(disc, 40.0, 2.0)
    d = rng.poisson(lam, (18, 10, 24, 24)).astype(np.uint16)
    d[3, 4, 11, 12] = 65535  # float32 accumulation would lose digits here
    path = tmp_path_factory.mktemp("dist") / "scan.npy"
    np.save(path, d)
    return path


def _workers(client) -> set:
    return set(client.scheduler_info()["workers"])


def test_cluster_maps_equal_the_local_run_exactly(cluster, counts_file):
    from napari_4dstem.pipeline import analyze

    local = analyze(counts_file, {"run_rrvae": False})
    dist = analyze(counts_file, {"run_rrvae": False}, client=cluster)
    assert set(dist.maps) == set(local.maps)
    for k in local.maps:
        np.testing.assert_array_equal(dist.maps[k], local.maps[k], err_msg=k)
    ran = dist.info["dask_workers"]
    assert set(ran) <= _workers(cluster) and sum(ran.values()) >= 6  # 3 tasks per worker at least
    assert dist.info["com_rotation_deg"] == local.info["com_rotation_deg"]


def test_every_reducer_on_the_cluster_equals_a_direct_computation(cluster, counts_file):
    from napari_4dstem.com import com_reducer
    from napari_4dstem.executor import MeanPattern, iter_run
    from napari_4dstem.io import load
    from napari_4dstem.preprocess import Preprocessing
    from napari_4dstem.virtual import virtual_reducer

    ds = load(counts_file)
    d = np.load(counts_file).astype(np.int64)
    pp = Preprocessing(target_size=12)
    pp.prepare(ds, True, None)

    def reducers():
        return [virtual_reducer(ds, {"bf": {"kind": "bf", "outer": 6}, "adf": {"kind": "adf", "inner": 7}}),
                com_reducer(ds, rotation=0, flip=False), MeanPattern(with_max=True), pp.binning_reducer(ds)]

    stats: dict = {}
    window = (2, 16, 1, 9)
    got = run_steps(iter_run(ds, reducers(), client=cluster, window=window, stats=stats))
    here = run_steps(iter_run(ds, reducers(), window=window))
    w = d[2:16, 1:9]
    masks = {k: v.mask for k, v in got[0].items()}
    for k in ("bf", "adf"):
        np.testing.assert_array_equal(got[0][k].image, (w * masks[k]).sum(axis=(2, 3)))
        np.testing.assert_array_equal(got[0][k].image, here[0][k].image)
    np.testing.assert_array_equal(got[1].total, w.sum(axis=(2, 3)))
    np.testing.assert_array_equal(got[1].raw_x, here[1].raw_x)
    np.testing.assert_array_equal(got[2]["sum"], w.sum(axis=(0, 1)))
    np.testing.assert_array_equal(got[2]["max"], w.max(axis=(0, 1)))
    binned = w.reshape(14, 8, 12, 2, 12, 2).sum(axis=(3, 5)).reshape(14, 8, -1)
    np.testing.assert_array_equal(got[3]["x"], binned.astype(np.float32))
    assert stats["tasks"] >= 4 and set(stats["workers"]) <= _workers(cluster)


def test_cli_against_a_running_scheduler(cluster, counts_file, tmp_path, capsys):
    from napari_4dstem.results import load_results

    out_d, out_l = tmp_path / "d.h5", tmp_path / "l.h5"
    assert main(["analyze", str(counts_file), "-o", str(out_d), "--no-rrvae", "-q",
                 "--scheduler", cluster.scheduler.address]) == 0
    assert main(["analyze", str(counts_file), "-o", str(out_l), "--no-rrvae", "-q"]) == 0
    d, l = load_results(out_d), load_results(out_l)
    for k in l.maps:
        np.testing.assert_array_equal(d.maps[k], l.maps[k], err_msg=k)
    assert set(d.info["dask_workers"]) <= _workers(cluster)


def test_unreachable_scheduler_is_one_clear_error(counts_file, tmp_path, capsys, monkeypatch):
    from napari_4dstem import executor

    monkeypatch.setattr(executor, "CONNECT_TIMEOUT_S", 1)
    rc = main(["analyze", str(counts_file), "-o", str(tmp_path / "r.h5"), "--no-rrvae",
               "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and "Traceback" not in err, err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in lines[0]
    with pytest.raises(DataError, match="local:N needs a whole number"):
        executor.connect("local:zero")
    assert not (tmp_path / "r.h5").exists()


def test_workers_that_cannot_open_the_file_give_one_clear_error(cluster, counts_file, tmp_path):
    from napari_4dstem.io import load
    from napari_4dstem.pipeline import analyze

    moved = tmp_path / "scan.npy"
    moved.write_bytes(counts_file.read_bytes())
    ds = load(moved)  # opened here ...
    moved.rename(tmp_path / "elsewhere.npy")  # ... but not where the workers look
    with pytest.raises(DataError) as err:
        analyze(ds, {"run_rrvae": False}, client=cluster)
    msg = str(err.value)
    assert "Dask worker" in msg and "scan.npy" in msg and "\n" not in msg
    assert "same path" in msg


def test_cancel_on_the_cluster(cluster, counts_file):
    from napari_4dstem.executor import Linear, iter_run
    from napari_4dstem.io import load

    ds = load(counts_file)
    cancel = threading.Event()
    seen = []

    def cb(p):
        seen.append(p.done)
        cancel.set()

    with pytest.raises(Cancelled):
        run_steps(iter_run(ds, [Linear(np.ones(ds.detector_shape))], client=cluster), cb, cancel)
    assert seen == [1]


def test_rrvae_encoding_in_chunks_here_and_on_the_cluster_equals_one_call(cluster):
    from napari_4dstem.pipeline import iter_encode
    from napari_4dstem.rrvae import RRVAE, RRVAEConfig

    rng = np.random.default_rng(7)
    ii, jj = np.indices((12, 12))
    base = np.exp(-((ii - 5.5) ** 2 + (jj - 5.5) ** 2) / 8.0).astype(np.float32)
    x = base + 0.2 * rng.random((9, 8, 12, 12), dtype=np.float32)
    model = RRVAE(RRVAEConfig(mode="fast", epochs=1, batch_size=16, detector_size=None, threads=1, seed=0))
    model.fit(x)
    whole = model.encode(x)
    err = model.reconstruction_error(x)
    for client in (None, cluster):
        lm, e = run_steps(iter_encode(model, x, client, chunk_patterns=16))  # 2 scan rows per chunk: 5 chunks
        np.testing.assert_allclose(lm.angle, whole.angle, atol=1e-5)
        np.testing.assert_allclose(lm.latents, whole.latents, atol=1e-5)
        np.testing.assert_allclose(lm.latent_sd, whole.latent_sd, atol=1e-5)
        np.testing.assert_allclose(e, err, rtol=1e-4, atol=1e-7)


def test_a_worker_killed_mid_run_still_gives_the_exact_result(cluster, counts_file, monkeypatch):
    from _slow_reducer import SlowTotals

    from napari_4dstem import executor
    from napari_4dstem.executor import iter_run
    from napari_4dstem.io import load

    monkeypatch.setattr(executor, "TASK_BYTES", 1)  # one scan row per task: 18 tasks
    ds = load(counts_file)
    pids = cluster.run(os.getpid)
    killed = []

    def cb(p):
        if not killed:  # after the first task, kill the other worker: it holds half the tasks, queued or running
            addr = next(a for a in pids if a != p.info["worker"])
            os.kill(pids[addr], signal.SIGKILL)
            killed.append(addr)

    stats: dict = {}
    row_bytes = ds.shape[1] * ds.shape[2] * ds.shape[3] * 2
    (totals,) = run_steps(iter_run(ds, [SlowTotals(0.15)], client=cluster, block_bytes=row_bytes, stats=stats), cb)
    np.testing.assert_array_equal(totals, np.load(counts_file).sum(axis=(2, 3), dtype=np.int64))
    assert killed and stats["tasks"] == 18
    assert killed[0] not in stats["workers"]  # its tasks were run again elsewhere
