"""The training loop: symmetric InfoNCE on the (globally gathered) batch, AdamW with
warm-up + cosine, accumulation, clipping, autocast, non-finite-loss guard, `last`/`best`
checkpoints chosen on validation, resume to the exact batch, JSONL logging."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vop.atomic import write_text
from vop.backbone import identity, load
from vop.data.datasets import OpenedSplit, describe_source, open_split
from vop.data.types import VideoReadError
from vop.data.transforms import VideoTransform, normalize
from vop.eval.evaluate import evaluate
from vop.model import from_config
from vop.display import format_header
from vop.runtime import autocast, setup
from vop.train import distributed as dist_utils
from vop.train.batches import CaptionVideoDataset, EpochSampler, make_loader, timed_batches, wait_fraction
from vop.checkpoint import STATE, load_state, read_weights, recover_checkpoint, save_checkpoint
from vop.train.config import TrainConfig
from vop.train.loss import SymmetricInfoNCE
from vop.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)
MAX_LOGIT_SCALE = math.log(100.0)


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses, or non-finite trained tensors; the last good
    checkpoint is kept."""


@dataclass(frozen=True)
class Plan:
    """How long a run is, fixed before its first step: the progress bar, the schedule, the
    header and the "already complete" check all read it."""

    per_rank: int  # batch per process
    batches_per_epoch: int  # global batches in one epoch
    steps_per_epoch: int  # optimiser steps in one epoch (batches // grad_accum)
    total_steps: int  # optim.max_steps, else steps_per_epoch * epochs
    epochs: int  # epochs needed to take total_steps


@dataclass
class RunState:
    epoch: int = 0  # current epoch
    batch: int = 0  # next batch index within the epoch
    step: int = 0  # optimiser steps taken
    best: float | None = None  # best validation score so far
    bad_steps: int = 0  # non-finite losses, total
    skipped_videos: int = 0  # distinct unreadable videos met in training
    skipped_examples: list = field(default_factory=list)  # their paths


class Trainer:
    """``Trainer(config).fit()`` trains, validates, checkpoints and tests one run.

    ``clip`` and ``splits`` may be injected (tests, the demo); otherwise the backbone is
    loaded from ``config.backbone`` and splits are opened from ``config.data``.
    ``on_step(trainer)`` is called after every optimiser step. ``say(line)`` receives what
    the run tells its user on rank 0 (the header, resuming, an interruption, "already
    complete"); by default it goes to the log.
    """

    def __init__(self, config: TrainConfig, *, clip=None, splits: dict[str, OpenedSplit] | None = None,
                 on_step: Callable[["Trainer"], None] | None = None, resume: bool = True,
                 say: Callable[[str], None] | None = None):
        self.config = config
        self.device, self.dist = setup(config.runtime.device, config.runtime.threads)
        if config.runtime.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("runtime.precision fp16 needs a GPU; use bf16 on CPU")
        self.out_dir = Path(config.runtime.out_dir)
        torch.manual_seed(config.runtime.seed)
        self.clip = clip if clip is not None else load(config.backbone)
        self.backbone_identity = identity(self.clip)  # before any training touches it
        self.model = from_config(config.method_config(), self.clip).to(self.device)
        self.model.gradient_checkpointing = config.runtime.gradient_checkpointing
        self.model.checkpoint_image_blocks = config.runtime.checkpoint_image_blocks
        # runtime.compile: the forward (and through AOTAutograd its backward) runs compiled;
        # self.model stays the plain module, so parameter names, checkpoints and resume are
        # the same either way. The loss and the all-gather stay outside the graph.
        self._forward = torch.compile(self.model) if config.runtime.compile else self.model
        if config.runtime.compile and self.model.text_conditioned:
            warnings.warn(f"runtime.compile does not apply to {config.method.name}: its text-conditioned loss "
                          "runs eagerly", stacklevel=2)
        self.splits = splits or {}
        self.on_step = on_step
        self.say = say or log.info
        self.input_timing = {"wait": 0.0, "compute": 0.0}  # seconds: waiting for batches, training on them
        self.loss_fn = SymmetricInfoNCE()
        self.state = RunState()
        self.plan: Plan | None = None  # set by fit
        # The optimisation objects, built by _build_optimisation once the plan is known.
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.scaler: torch.amp.GradScaler | None = None
        self.saved_step: int | None = None  # the step `last` holds (None: no `last` yet)
        self._bad_streak = 0  # consecutive non-finite optimiser steps
        self._step_finite = True  # every micro-batch of the current optimiser step had a finite loss
        self._resume = resume
        self._tb = None

    # -- data ------------------------------------------------------------------------
    def split(self, name: str) -> OpenedSplit:
        if name not in self.splits:
            self.splits[name] = open_split(self.config.data, name)
            cache = getattr(self.splits[name].split.source, "cache", None)
            resolution = self.clip.config.image_resolution
            if cache is not None and cache.size != resolution and self.dist.is_main:
                warnings.warn(f"the frame cache {cache.directory} holds {cache.size} px frames but the backbone takes "
                              f"{resolution} px: frames are resized on the fly ({'upscaled, losing detail' if cache.size < resolution else 'downscaled'}); "
                              f"rebuild it with vop cache ... --backbone {self.config.backbone}", stacklevel=2)
        return self.splits[name]

    def _loader(self, sampler: EpochSampler, dataset: CaptionVideoDataset) -> DataLoader:
        return make_loader(dataset, sampler, self.config.data.workers, pin_memory=self.device.type == "cuda")

    def check_splits(self) -> None:
        """Fail before training when the train, val or test split has no video that loads
        (otherwise a broken val or test split is found only after training). Cheap: each
        split stops at its first video that loads (a frame cache read, or one decode)."""
        d = self.config.data
        for name in dict.fromkeys((d.train_split, d.val_split, d.test_split)):
            opened = self.split(name)
            s = opened.split
            if s.num_videos == 0:
                raise ValueError(f"the {name} split has no videos ({describe_source(opened)}); fix the data "
                                 "(vop data check) before training")
            first_error = None
            with torch.random.fork_rng(devices=[]):  # the probe must not move the run's random stream
                for index in range(s.num_videos):
                    try:
                        s.source.load(index, opened.num_frames, "middle", None)
                        break
                    except VideoReadError as exc:
                        first_error = first_error or exc
                else:
                    raise ValueError(
                        f"the {name} split has no readable video: all {s.num_videos} failed "
                        f"({describe_source(opened)}), e.g. {first_error}; fix the data (vop data check) before "
                        "training")

    # -- the plan and the optimisation objects ------------------------------------------
    def make_plan(self, sampler: EpochSampler) -> Plan:
        o = self.config.optim
        if o.max_steps is not None and o.max_steps < 1:  # 0 must not mean "the full schedule"
            raise ValueError(f"optim.max_steps must be >= 1 (or null: optim.epochs decides), got {o.max_steps}")
        steps_per_epoch = sampler.batches_per_epoch // o.grad_accum
        if steps_per_epoch < 1:
            raise ValueError(f"an epoch of {sampler.batches_per_epoch} batches makes no optimiser step with "
                             f"optim.grad_accum {o.grad_accum}; lower optim.grad_accum or optim.batch_size")
        total_steps = o.max_steps or steps_per_epoch * o.epochs
        return Plan(per_rank=sampler.batch_size, batches_per_epoch=sampler.batches_per_epoch,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    epochs=math.ceil(total_steps / max(1, steps_per_epoch)))

    def _build_optimisation(self, total_steps: int) -> None:
        """The optimiser (AdamW over the method's parameter groups), its warm-up + cosine
        schedule over ``total_steps``, and the fp16 gradient scaler (None otherwise).
        Override to train with other ones; the checkpoint stores their state dicts."""
        o = self.config.optim
        self.optimizer = build_optimizer(self.model, o)
        self.scheduler = build_scheduler(self.optimizer, total_steps, o)
        self.scaler = torch.amp.GradScaler("cuda") if self.config.runtime.precision == "fp16" else None

    # -- checkpoints ---------------------------------------------------------------------
    def _data_record(self) -> dict:
        from vop.configio import to_dict

        return to_dict(self.config.data)

    def _last_dir(self) -> Path:
        return self.out_dir / "checkpoints" / "last"

    def _check_finite(self) -> None:
        """Stop before a checkpoint (or a validation) would take non-finite trained tensors."""
        bad = [name for name, t in self.model.trainable_state_dict().items() if not bool(torch.isfinite(t).all())]
        if bad:
            kept = (f"the last good checkpoint {self._last_dir()} (step {self.saved_step}) is kept"
                    if self.saved_step is not None else "no checkpoint was written")
            raise TrainingDiverged(
                f"step {self.state.step}: {len(bad)} trained tensor(s) hold non-finite values (e.g. {bad[0]}), so "
                f"nothing more is saved and training stops; {kept}. Lower optim.lr, or use fp32/bf16")

    def _save(self, which: str, metrics: dict | None = None, with_state: bool = True) -> None:
        self._check_finite()  # on every rank: all stop together
        if which == "last":
            self.saved_step = self.state.step
        if not self.dist.is_main:
            return
        state = None
        if with_state:
            state = {
                "run": self.state.__dict__,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": torch.random.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "config": self.config.to_dict(),
            }
        save_checkpoint(self.out_dir / "checkpoints" / which, self.model, backbone_source=self.config.backbone,
                        data=self._data_record(), metrics=metrics or {}, state=state,
                        backbone_identity=self.backbone_identity,
                        extra={"step": self.state.step, "epoch": self.state.epoch, "train_config": self.config.to_dict(),
                               "eval_precision": self.config.runtime.precision})

    def _try_resume(self) -> Path | None:
        """Load ``last`` (weights, optimiser, schedule, RNG, position) when there is one:
        the folder resumed from, or None."""
        last = self._last_dir()
        if not self._resume:
            return None
        if self.dist.is_main:
            # A save interrupted between its renames leaves `last` under a temporary name:
            # put back the newest complete version (never one chosen by its name), drop the rest.
            recover_checkpoint(last)
        dist_utils.barrier()
        if not last.exists():
            return None
        saved = _read_state(last)
        if _resume_key(saved["config"]) != _resume_key(self.config.to_dict()):
            raise ValueError(
                f"{self.out_dir} holds a run with a different config; resume it with the same config, "
                "or choose a new runtime.out_dir (or pass --restart to overwrite)"
            )
        self.model.load_trainable_state_dict(read_weights(last))  # whole, finite, or refused naming the file
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved["scaler"] is not None:
            self.scaler.load_state_dict(saved["scaler"])
        torch.random.set_rng_state(saved["rng"])
        if saved["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        self.state = RunState(**saved["run"])
        self.saved_step = self.state.step
        self._truncate_log(self.state.step)
        if self.dist.is_main:
            log.info("resumed %s at epoch %d, batch %d (step %d)", last, self.state.epoch, self.state.batch,
                     self.state.step)
        return last

    # -- logging -----------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is None and self.config.runtime.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except Exception:  # noqa: BLE001 - TensorBoard is optional
                self._tb = False
        if self._tb:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record.get("step", 0))

    def _truncate_log(self, step: int) -> None:
        """Drop the log records of steps after ``step`` (the resumed checkpoint's): they are
        trained again, and would otherwise be logged twice."""
        file = self.out_dir / "log.jsonl"
        if not (self.dist.is_main and file.exists()):
            return
        lines = file.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) <= step]
        if len(kept) != len(lines):
            write_text(file, "".join(kept))

    def _announce(self, text: str) -> None:
        if self.dist.is_main:
            self.say(text)

    def header(self, plan: Plan, train: OpenedSplit) -> str:
        """What this run is, in words: printed at its start."""
        cfg, o, r = self.config, self.config.optim, self.config.runtime
        trainable, total = self.model.num_trainable(), self.clip.num_parameters()
        if o.max_steps:
            length = f"{plan.total_steps} optimiser steps (optim.max_steps; an epoch is {plan.steps_per_epoch})"
        else:
            length = f"{plan.total_steps} optimiser steps ({plan.epochs} epochs of {plan.steps_per_epoch})"
        world = (f"{self.dist.world_size} processes ({self.dist.backend})" if self.dist.enabled
                 else "1 process (no process group)")
        rows = [
            ("backbone", f"{cfg.backbone}: {self.clip.weights_source}"),
            ("method", f"{cfg.method.name}: {trainable:,} trainable parameters "
                       f"({100 * trainable / max(1, total):.3g} % of the backbone's {total:,})"),
            ("device", f"{self.device}, precision {r.precision} (autocast)"),
            ("world", world),
            ("steps", f"{length}; global batch {o.batch_size}"
                      + (f" x {o.grad_accum} accumulated" if o.grad_accum > 1 else "")),
            ("data", f"{cfg.data.benchmark} {cfg.data.train_split}: {describe_source(train)}"),
            ("output", self.out_dir.resolve()),
        ]
        return format_header(f"vop train: {cfg.method.name} on {cfg.data.benchmark}", rows)

    # -- the loop ----------------------------------------------------------------------
    def validate(self, split_name: str, model=None) -> dict:
        return evaluate(model or self.model, self.split(split_name), self.config.eval, device=self.device,
                        precision=self.config.runtime.precision,
                        progress=self.config.runtime.progress and self.dist.is_main)

    def fit(self) -> dict:
        d, o, r = self.config.data, self.config.optim, self.config.runtime
        train = self.split(d.train_split)
        per_rank = o.batch_size // self.dist.world_size
        if per_rank * self.dist.world_size != o.batch_size:
            raise ValueError(f"optim.batch_size {o.batch_size} is not divisible by {self.dist.world_size} processes")
        groups = train.groups if (d.pair_batches and train.groups) else [[i] for i in range(train.split.num_captions)]
        sampler = EpochSampler(groups, per_rank, seed=r.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        transform = VideoTransform(size=self.clip.config.image_resolution, train=True, random_crop=d.random_crop,
                                   flip=d.flip, crop_scale=d.crop_scale)
        dataset = CaptionVideoDataset(train.split, transform, d.num_frames, d.train_sampling, seed=r.seed)
        plan = self.plan = self.make_plan(sampler)
        self._build_optimisation(plan.total_steps)
        resumed = self._try_resume()
        if self.state.step >= plan.total_steps:
            return self._already_trained()
        self.check_splits()
        self._announce(self.header(plan, train))
        if resumed is not None:
            self._announce(f"resuming from step {self.state.step} of {plan.total_steps} (checkpoint {resumed})")
        started = time.time()
        try:
            self._train(plan, sampler, dataset, started)
            return self._finish(time.time() - started)
        except KeyboardInterrupt:
            self._announce(self._interrupted())
            raise

    def _train(self, plan: Plan, sampler: EpochSampler, dataset: CaptionVideoDataset, started: float) -> None:
        o, r = self.config.optim, self.config.runtime
        trainable = list(self.model.trainable_parameters().values())
        self.model.train()
        done = False
        # One bar for the run, counting optimiser steps to the run's real total.
        bar = tqdm(total=plan.total_steps, initial=self.state.step, disable=not (r.progress and self.dist.is_main),
                   unit="step", dynamic_ncols=True)
        while self.state.epoch < plan.epochs and not done:
            sampler.set_epoch(self.state.epoch, self.state.batch)
            self.optimizer.zero_grad(set_to_none=True)  # drop the last epoch's incomplete accumulation
            bar.set_description(f"epoch {self.state.epoch + 1}/{plan.epochs}")
            tick, seen = time.time(), 0
            for batch in timed_batches(self._loader(sampler, dataset), self.input_timing):
                work_started = time.perf_counter()
                self._note_failures(batch["failed"])
                loss = self._forward_backward(batch, o.grad_accum)
                seen += batch["frames"].shape[0] * self.dist.world_size
                self.state.batch += 1
                if self.state.batch % o.grad_accum:
                    self.input_timing["compute"] += time.perf_counter() - work_started
                    continue
                stepped = self._optimizer_step(trainable, loss)
                self.input_timing["compute"] += time.perf_counter() - work_started
                if not stepped:
                    continue
                self.state.step += 1
                bar.update(1)
                lr = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0]["lr_scale"]
                rate = seen / max(1e-9, time.time() - tick)
                waiting = self.input_wait_fraction()
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", vid_s=f"{rate:.1f}", wait=f"{waiting:.0%}")
                if self.state.step % r.log_every == 0:
                    self._log({"kind": "train", "step": self.state.step, "epoch": self.state.epoch, "loss": loss,
                               "lr": lr, "videos_per_s": rate, "input_wait": waiting, "time": time.time() - started})
                if r.val_every_steps and self.state.step % r.val_every_steps == 0:
                    self.model.eval()
                    self._validate_and_keep_best()
                    self.model.train()
                if r.save_every and self.state.step % r.save_every == 0:
                    self._save("last")
                if self.on_step is not None:
                    self.on_step(self)
                if self.state.step >= plan.total_steps:
                    done = True
                    break
            if not done or self.state.batch >= sampler.batches_per_epoch:
                self.state.epoch += 1
                self.state.batch = 0
            self._end_of_epoch(plan.epochs, done)
        bar.close()

    def _interrupted(self) -> str:
        """What an interruption (Ctrl-C) cost, and how to go on."""
        step, saved = self.state.step, self.saved_step
        if saved is None:
            return (f"interrupted at step {step}, before the first checkpoint: {step} step(s) lost; running the "
                    "same command again starts the run over")
        return (f"interrupted at step {step}: the last checkpoint is step {saved} ({self._last_dir()}), so "
                f"{step - saved} step(s) are lost; running the same command again resumes from step {saved}")

    def _already_trained(self) -> dict:
        """A run whose `last` holds every step: nothing is trained or validated again; the
        test split is evaluated only if that has not happened yet (no summary.json)."""
        summary_file = self.out_dir / "summary.json"
        if summary_file.exists():
            self._announce(f"{self.out_dir}: already complete ({self.state.step} steps); its results are in "
                           f"{summary_file}. Nothing to do (vop train --restart trains it again)")
            return json.loads(summary_file.read_text())
        self._announce(f"{self.out_dir}: training already complete ({self.state.step} steps); evaluating the "
                       "test split")
        return self._finish(0.0)

    def _note_failures(self, failed: list) -> None:
        # Count videos, not failed reads: a broken video is met again for each of its
        # captions, in every epoch, and by the retry of its neighbouring caption.
        for path, reason in failed:
            if path not in self.state.skipped_examples:
                log.warning("skipped unreadable video %s: %s", path, reason)
                self.state.skipped_examples.append(path)
        self.state.skipped_videos = len(self.state.skipped_examples)

    def _forward_backward(self, batch: dict, accum: int) -> float:
        frames = normalize(batch["frames"].to(self.device, non_blocking=True))
        ids = self.model.tokenize(batch["captions"]).to(self.device)
        if self.model.text_conditioned:
            loss = self._text_conditioned_loss(frames, ids)
        else:
            with autocast(self.device, self.config.runtime.precision):
                video, text, scale = self._forward(frames, ids)
            video = dist_utils.all_gather_with_grad(video.float())
            text = dist_utils.all_gather_with_grad(text.float())
            loss = self.loss_fn(video, text, scale.float())
        finite = bool(torch.isfinite(loss))
        if self.state.batch % accum == 0:  # first micro-batch of an optimiser step
            self._step_finite = True
        # One non-finite micro-batch spoils its whole step, not just its own gradient.
        self._step_finite = self._step_finite and finite
        if finite:
            scaled = loss / accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return float(loss.detach())

    def _text_conditioned_loss(self, frames: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """X-Pool-style methods: every caption pools every video of the (globally gathered)
        batch, so the logits are ``scale * model.score_features(...)``, not a dot product."""
        with autocast(self.device, self.config.runtime.precision):
            text = self.model.text_features(ids)  # [n, D], unnormalised
            feats = self.model.frame_features(frames)  # [n, F, D]
        text = dist_utils.all_gather_with_grad(text.float())
        feats = dist_utils.all_gather_with_grad(feats.float())
        scale = self.model.clip.logit_scale.exp().float()
        return self.loss_fn.from_logits(scale * self.model.score_features(text, feats, chunk=None))

    def _optimizer_step(self, trainable: list, loss: float) -> bool:
        r, o = self.config.runtime, self.config.optim
        if not self._step_finite:
            self.state.bad_steps += 1
            self._bad_streak += 1
            warnings.warn(f"non-finite loss ({loss}) at step {self.state.step}; the step is skipped", stacklevel=2)
            self.optimizer.zero_grad(set_to_none=True)
            if self._bad_streak >= r.max_bad_steps:
                raise TrainingDiverged(
                    f"{self._bad_streak} consecutive non-finite losses: training stopped. The last good "
                    f"checkpoint is {self.out_dir / 'checkpoints' / 'last'}; lower optim.lr or use fp32/bf16"
                )
            return False
        self._bad_streak = 0
        dist_utils.average_gradients(trainable)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, o.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.clip.logit_scale.requires_grad:
            with torch.no_grad():
                self.clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return True

    def _validate_and_keep_best(self) -> None:
        """Validate (rank 0), log, and save ``best`` when the val score improves."""
        self._check_finite()
        if self.dist.is_main:
            metrics = self.validate(self.config.data.val_split)
            self._log({"kind": "val", "step": self.state.step, "epoch": self.state.epoch, **_numeric(metrics)})
            score = metrics["t2v_r1"] + metrics["v2t_r1"] + metrics.get("pair_accuracy", 0.0)
            if self.state.best is None or score > self.state.best:
                self.state.best = score
                self._save("best", metrics={"val": metrics}, with_state=False)
        dist_utils.barrier()

    def _end_of_epoch(self, epochs: int, done: bool) -> None:
        r = self.config.runtime
        finished_epoch = self.state.epoch  # epochs completed
        validated_now = r.val_every_steps and self.state.step % r.val_every_steps == 0
        if (done or finished_epoch % r.eval_every == 0 or finished_epoch >= epochs) and not validated_now:
            self._validate_and_keep_best()
        self._save("last")
        dist_utils.barrier()

    def input_wait_fraction(self) -> float:
        """Share of training time (waiting for input + forward/backward/optimiser, not
        validation or saving) spent waiting for the data loader, since the run started."""
        return wait_fraction(self.input_timing)

    def _finish(self, seconds: float) -> dict:
        summary = {"steps": self.state.step, "train_seconds": seconds, "input_wait": self.input_wait_fraction(),
                   "skipped_videos": self.state.skipped_videos,
                   "skipped_examples": self.state.skipped_examples[:5], "non_finite_steps": self.state.bad_steps}
        if self.dist.is_main:
            from vop.checkpoint import load_checkpoint

            best_dir = self.out_dir / "checkpoints" / "best"
            # Same backbone object: the subset baselines' trained tensors are overwritten by best's.
            best, meta = load_checkpoint(best_dir, self.clip, strict_backbone=False)
            best.to(self.device)
            summary["val"] = meta["metrics"].get("val", {})
            summary["test"] = self.validate(self.config.data.test_split, model=best)
            self._log({"kind": "test", "step": self.state.step, **_numeric(summary["test"])})
            write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2))
            if self.state.skipped_videos:
                print(f"skipped {self.state.skipped_videos} unreadable videos during training, e.g. "
                      f"{self.state.skipped_examples[:3]}")
        dist_utils.barrier()
        return summary


# Settings that do not change what a run computes: a resumed run may differ in them. The
# output folder is one: a moved or copied run folder resumes.
# (compile: a run started eager may resume compiled and the other way round.)
_COSMETIC = ("device", "progress", "threads", "log_every", "tensorboard", "save_every", "out_dir", "compile")
_STATE_KEYS = ("run", "optimizer", "scheduler", "scaler", "rng", "cuda_rng", "config")


def _read_state(last: Path) -> dict:
    """The training state saved beside checkpoint ``last``; refuses (naming the file) a
    missing or unreadable one: resuming without it would silently restart from step 0
    and overwrite ``last`` and ``best``."""
    file = last / STATE
    fix = (f"restore it, or start over with vop train --restart (which deletes {last.parent}), or choose a new "
           "runtime.out_dir")
    if not file.exists():
        raise ValueError(f"{file} is missing: checkpoint {last} holds trained weights but not the training state "
                         f"(optimiser, schedule, position) needed to resume; {fix}")
    try:
        saved = load_state(last)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on a damaged file
        raise ValueError(f"{file}: cannot be read ({type(exc).__name__}: {exc}); {fix}") from None
    missing = [k for k in _STATE_KEYS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise ValueError(f"{file}: not a vop training state (missing {', '.join(missing)}); {fix}")
    return saved


def _resume_key(config: dict) -> dict:
    runtime = {k: v for k, v in config.get("runtime", {}).items() if k not in _COSMETIC}
    # Loader processes change only how fast batches come (each item's randomness is its own),
    # and their default follows the machine's CPUs.
    data = {k: v for k, v in config.get("data", {}).items() if k != "workers"}
    return {**config, "runtime": runtime, "data": data}


def _logged_step(line: str) -> float:
    """The step of a log.jsonl line (a torn last line, from a kill mid-write, counts as after
    every step: it is dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
