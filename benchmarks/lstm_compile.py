"""Before/after for the traceable BiLSTM: ``vop-fc`` / ``vop-c`` encoding through
``torch.compile`` with the context module as

- ``torch.nn.LSTM`` holding the same weights (before: Dynamo refuses to trace nn.LSTM, and
  the graph breaks split the image tower into many graphs);
- ``vop.methods.bilstm.BiLSTM`` (after: compiled, it runs its unrolled form, and the
  encoder is one graph).

Both are bf16-weight copies of one model, compiled, and timed in alternation with the
uncompiled bf16 model in one process. It prints each compile time (set
``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` for cold compiles), the best and median time per
call, the speed-up over the uncompiled model, the number of graphs Dynamo made, and the
largest difference from the uncompiled model's embeddings.

    python benchmarks/lstm_compile.py --threads 1                 # CPU, vop-fc, batch 8
    python benchmarks/lstm_compile.py --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vop.backbone  # noqa: E402
import vop.methods  # noqa: E402


def with_nn_lstm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose context module is a torch.nn.LSTM with the same weights."""
    before = copy.deepcopy(model)
    mine = before.frame_prompts.context
    lstm = torch.nn.LSTM(mine.input_size, mine.hidden_size, batch_first=True, bidirectional=True)
    lstm.load_state_dict(mine.state_dict())
    before.frame_prompts.context = _TupleFirst(lstm.to(next(mine.parameters())))
    return before


class _TupleFirst(torch.nn.Module):
    """nn.LSTM returning its output only, as BiLSTM does."""

    def __init__(self, lstm: torch.nn.LSTM):
        super().__init__()
        self.lstm = lstm

    @property
    def weight_ih_l0(self) -> torch.Tensor:
        return self.lstm.weight_ih_l0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def count_graphs(fn, frames) -> int:
    explained = torch._dynamo.explain(fn)(frames)
    return explained.graph_count


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--method", default="vop-fc", choices=["vop-fc", "vop-c"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8, help="videos per call")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--reps", type=int, default=3, help="timed calls of each encoder")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend ('eager': Dynamo only, for a smoke run)")
    args = p.parse_args(argv)
    device = common.start(args)
    model = vop.create(args.method, vop.backbone.load(args.backbone)).to(device).eval()
    low = model.to(torch.bfloat16)
    before = with_nn_lstm(low)
    g = torch.Generator().manual_seed(0)
    frames = common.fake_frames(args.batch, args.frames, model.clip.config.image_resolution, g)
    frames = frames.to(device, torch.bfloat16)

    # The models run the same methods (one class), and Dynamo keeps its compiled variants
    # per function: the nn.LSTM model's graph breaks make many, and past the default limit
    # of 8 Dynamo would silently run the rest eagerly, for every model.
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    models = {"compiled, nn.LSTM (before)": before, "compiled, BiLSTM (after)": low}
    encoders, graphs, compile_s, diff = {"uncompiled": low.encode_video}, {}, {}, {}
    with torch.inference_mode():
        reference = low.encode_video(frames).float()
        for name, m in models.items():
            fn = torch.compile(m.encode_video, backend=args.backend)
            started = time.perf_counter()
            out = fn(frames).float()
            compile_s[name] = time.perf_counter() - started
            diff[name] = (out - reference).abs().max().item()
            encoders[name] = fn
        runs = {k: (lambda fn=fn: fn(frames)) for k, fn in encoders.items()}
        times = common.interleaved(runs, args.reps, warmup=1, device=device)
        for name, m in models.items():
            graphs[name] = count_graphs(m.encode_video, frames)  # afterwards: explain() resets Dynamo
    base = common.median(times["uncompiled"])
    rows = [[k, f"{min(v):.3f}", f"{common.median(v):.3f}", f"{base / common.median(v):.2f}",
             str(graphs.get(k, "-")), f"{compile_s[k]:.0f}" if k in compile_s else "-",
             f"{diff[k]:.1e}" if k in diff else "-"] for k, v in times.items()]
    print(f"{args.method}, bf16 weights, batch {args.batch} x {args.frames} frames, {args.reps} reps, interleaved, "
          f"{common.default_clock(device)} seconds per call")
    print(common.markdown_table(["encoder", "best s", "median s", "x uncompiled (median)", "Dynamo graphs",
                                 "compile s", "max diff vs uncompiled"], rows))


if __name__ == "__main__":
    main()
