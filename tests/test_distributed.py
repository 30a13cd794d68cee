"""Two gloo processes on CPU, set up the way torchrun sets them up (RANK, WORLD_SIZE,
MASTER_ADDR/PORT in the environment): the gathered loss and the averaged gradients equal
one process on the combined batch, and a 2-process Trainer.fit run trains identical
replicas and writes checkpoints from rank 0 only."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch

import vop.backbone as backbone
import vop
import vop.methods as methods
from vop.train.loss import SymmetricInfoNCE

pytestmark = pytest.mark.slow
WORLD = 2
CAPTIONS = ["a red circle moves right", "a blue square shrinks", "a green triangle spins", "nothing happens"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    return vop.create("vop-fc", backbone.load("tiny"), num_frames=4)


def _worker(rank: int, port: int, folder: str) -> None:
    """One rank, set up from the environment as torchrun would: a training step's loss and
    gradients on its half of the batch, then a short Trainer.fit run in the same group."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD)})
    os.chdir(folder)
    torch.set_num_threads(1)
    import vop.train.trainer as trainer_module
    from vop.train import distributed
    from vop.train.config import TrainConfig

    # 1. Loss and gradients with this rank holding half of the batch.
    info = __import__("vop.runtime", fromlist=["x"]).init_distributed("cpu")
    inputs = torch.load("inputs.pt")
    model = _model()
    model.load_trainable_state_dict(inputs["weights"])
    n = inputs["frames"].shape[0] // info.world_size
    mine = slice(info.rank * n, (info.rank + 1) * n)
    video, text, scale = model(inputs["frames"][mine], inputs["ids"][mine])
    video = distributed.all_gather_with_grad(video)
    text = distributed.all_gather_with_grad(text)
    loss = SymmetricInfoNCE()(video, text, scale)
    loss.backward()
    trainable = model.trainable_parameters()
    distributed.average_gradients(trainable.values())
    torch.save({"rank": info.rank, "world": info.world_size, "loss": loss.detach(), "video": video.detach(),
                "grads": {k: p.grad for k, p in trainable.items()}}, f"grads-rank{info.rank}.pt")

    # 2. A short Trainer.fit run, recording which ranks write checkpoints.
    real_save = trainer_module.save_checkpoint

    def recording_save(path, *args, **kwargs):
        with open(f"saves-rank{info.rank}.txt", "a") as f:
            f.write(f"{path}\n")
        return real_save(path, *args, **kwargs)

    trainer_module.save_checkpoint = recording_save
    trainer = trainer_module.Trainer(TrainConfig.from_dict(json.loads(Path("config.json").read_text())))
    summary = trainer.fit()
    torch.save(trainer.model.trainable_state_dict(), f"weights-rank{info.rank}.pt")
    Path(f"done-rank{info.rank}.json").write_text(json.dumps(
        {"rank": trainer.dist.rank, "world": trainer.dist.world_size, "steps": summary["steps"]}))


def _launch(folder: Path, timeout: float = 120) -> None:
    """Ranks 0 and 1 of one gloo group. Forked, not spawned: fresh interpreters would
    spend most of the test importing torch (and the optimiser's dynamo) twice over."""
    import torch._dynamo  # noqa: F401 - imported once here rather than in each rank

    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, str(folder))) for rank in range(WORLD)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(timeout)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    codes = [proc.exitcode for proc in procs]
    assert codes == [0] * WORLD, f"rank exit codes {codes} (tracebacks above)"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Inputs, the single-process reference, and the two ranks' outputs."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    model = _model()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # away from the init, so every gradient is non-trivial
        for p in model.trainable_parameters().values():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    frames = torch.randn(4, 4, 3, 32, 32, generator=g)  # [B, F, 3, S, S]: two per rank
    ids = model.tokenize(CAPTIONS)
    torch.save({"frames": frames, "ids": ids, "weights": model.trainable_state_dict()}, tmp_path / "inputs.pt")
    video, text, scale = model(frames, ids)
    loss = SymmetricInfoNCE()(video, text, scale)
    loss.backward()
    reference = {"loss": loss.detach(), "video": video.detach(),
                 "grads": {k: p.grad for k, p in model.trainable_parameters().items()}}

    config = {
        "backbone": "tiny", "method": {"name": "vop"},
        "data": {"benchmark": "synthetic", "num_frames": 2, "workers": 0,
                 "synthetic": {"train_pairs": 8, "val_pairs": 2, "test_pairs": 2}},
        "optim": {"batch_size": 8, "epochs": 1, "lr": 1e-2},  # 4 per rank, 2 steps
        "runtime": {"device": "cpu", "out_dir": str(tmp_path / "run"), "save_every": 1, "log_every": 1,
                    "progress": False, "tensorboard": False},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    _launch(tmp_path)
    return tmp_path, reference


def test_gathered_loss_and_averaged_gradients_equal_one_process(launched):
    tmp_path, want = launched
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"grads-rank{rank}.pt")
        assert (got["rank"], got["world"]) == (rank, WORLD)
        torch.testing.assert_close(got["video"], want["video"], rtol=0, atol=1e-5)  # gathered in rank order
        torch.testing.assert_close(got["loss"], want["loss"], rtol=0, atol=1e-5)
        assert sorted(got["grads"]) == sorted(want["grads"])
        for name, grad in want["grads"].items():
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(got["grads"][name], grad, rtol=0, atol=1e-5, msg=f"rank {rank}: {name}")


def test_two_process_fit_completes_with_checkpoints_from_rank_zero_only(launched):
    tmp_path, _ = launched
    out = tmp_path / "run"
    done = [json.loads((tmp_path / f"done-rank{r}.json").read_text()) for r in range(WORLD)]
    assert done == [{"rank": r, "world": WORLD, "steps": 2} for r in range(WORLD)]
    saves = (tmp_path / "saves-rank0.txt").read_text().split()
    assert any(s.endswith("last") for s in saves) and any(s.endswith("best") for s in saves)
    assert not (tmp_path / "saves-rank1.txt").exists()  # rank 1 never writes
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "last"]
    assert (out / "summary.json").exists()
    # Averaged gradients keep the replicas identical.
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt") for r in range(WORLD))
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "train"] == [1, 2]  # rank 0 logs, once per step
