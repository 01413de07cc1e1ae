"""The forecasting LightningModule: next-bar direction per asset, scored as a trading signal.

Its signal becomes target positions that the shared simulator prices on the validation and
test splits, beside buy-and-hold of the same assets. It is the forecaster half of
:class:`modules.family.ModelFamily`: any network of :mod:`modules.forecasters.nets` (chosen by
``_target_`` in ``model.network``) trains through it.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError
from datamodules.windows import WindowDataModule
from envs.accounting import DEFAULT_CAPITAL
from envs.backtest import BacktestResult, backtest, buy_and_hold_targets
from envs.frictions import Frictions
from envs.metrics import REPORTED, loggable, metrics_to_floats
from envs.stitch import concat_results
from modules.carry import Layout
from modules.family import Checkpointing, RunInputs, StrategyPlan
from modules.forecasters.config import SIGNALS, SignalConfig, TaskConfig, TrainerConfig
from modules.forecasters.inference import ForecasterInference
from modules.forecasters.nets import ForecasterNet
from modules.hardware import Hardware
from modules.signature import Inference, float_signature

log = logging.getLogger(__name__)

__all__ = ["REPORTED", "ForecastModule", "probabilities_to_targets"]


def probabilities_to_targets(
    probs: torch.Tensor, mode: str = "argmax", long_only: bool = False
) -> torch.Tensor:
    """Target weights (N, A) from class probabilities (N, A, C), 1/A of equity per asset at most.

    Classes are ordered down, (flat,) up. ``argmax``: +1 for up, -1 for down, 0 for flat;
    ``expected``: P(up) - P(down), a position sized by confidence. ``long_only`` clips at 0.
    """
    if mode not in SIGNALS:
        raise ConfigError(f"model.signal.mode is '{mode}'; choose one of {', '.join(SIGNALS)}.")
    num_assets, num_classes = probs.shape[-2], probs.shape[-1]
    if mode == "argmax":
        cls = probs.argmax(-1)
        raw = (cls == num_classes - 1).to(probs.dtype) - (cls == 0).to(probs.dtype)
    else:
        raw = probs[..., -1] - probs[..., 0]
    if long_only:
        raw = raw.clamp_min(0.0)
    return raw / num_assets


class ForecastModule(pl.LightningModule):
    """Trains a forecaster network with cross-entropy; logs classification and trading metrics.

    ``network``: a :class:`~modules.forecasters.nets.ForecasterNet`, or the partial the
    config's ``model.network`` builds (called here with the data module's input size, number
    of assets, number of classes and bar length). ``optimizer`` and ``scheduler`` are partials
    (Hydra ``_partial_: true``); the scheduler gets ``total_steps`` and is stepped per batch.
    ``task``, ``signal`` and ``trainer`` are the config sections of those names. Validation
    and test predictions become positions (``signal``) backtested with ``frictions`` and
    ``capital`` (currency) on the data module's market; the results are kept in
    ``self.reports[split]``. ``datamodule`` serves the windows (``build`` passes it).
    """

    resumable: ClassVar[bool] = False
    lengths: ClassVar[Mapping[str, str]] = {
        "epochs": "trainer.max_epochs",
        "steps": "trainer.max_steps",
    }

    def __init__(
        self,
        network: ForecasterNet | Callable[..., ForecasterNet],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        *,
        task: TaskConfig | Mapping | None = None,
        signal: SignalConfig | Mapping | None = None,
        trainer: TrainerConfig | Mapping | None = None,
        attention_every_n_epochs: int = 0,
        name: str = "forecaster",
        datamodule: WindowDataModule | None = None,
        frictions: Frictions | None = None,
        capital: float = DEFAULT_CAPITAL,
        plot_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.task_cfg = dataclass_from(TaskConfig, task, "model.task")
        self.signal_cfg = dataclass_from(SignalConfig, signal, "model.signal")
        self.trainer_cfg = dataclass_from(TrainerConfig, trainer, "model.trainer")
        self.name = str(name)
        self._dm = datamodule
        if not isinstance(network, nn.Module):
            if datamodule is None:
                raise ConfigError(
                    "ForecastModule builds model.network from the data module's shapes: pass "
                    "datamodule= (the run does), or a built network."
                )
            network = network(
                input_size=datamodule.input_size,
                num_assets=datamodule.num_assets,
                num_classes=self.task_cfg.num_classes,
                bar_minutes=datamodule.market.bar_minutes,
            )
        if not isinstance(network, ForecasterNet):
            raise ConfigError(
                f"model.network builds a {type(network).__name__}, not a forecaster network: "
                "subclass modules.forecasters.nets.ForecasterNet (it declares uses_age and "
                "has_attention, which the module and the export read)."
            )
        self.net = network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = self.task_cfg.num_classes
        self.frictions = Frictions.from_config(frictions)
        self.capital = float(capital)
        self.attention_every_n_epochs = int(attention_every_n_epochs)
        self.plot_dir = plot_dir
        metrics = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(self.num_classes, average="micro"),
                "balanced_accuracy": MulticlassAccuracy(self.num_classes, average="macro"),
                "auroc": MulticlassAUROC(self.num_classes),
            }
        )
        self.metrics = nn.ModuleDict(
            {f"{p}_metrics": metrics.clone(prefix=f"{p}/") for p in ("train", "val", "test")}
        )
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}
        self.reports: dict[str, dict[str, BacktestResult]] = {}
        self.risk_totals: dict[str, int] = {}  # forecasters trade no risk rules
        self._buy_and_hold: dict[str, BacktestResult] = {}

    # ------------------------------------------------------------------ the family protocol
    @classmethod
    def length_overrides(cls, unit: str, length: int) -> list[str]:
        """Epochs (no step limit) or steps (no epoch limit)."""
        if unit == "steps":
            return [f"model.trainer.max_steps={length}", "model.trainer.max_epochs=-1"]
        return [f"model.trainer.max_epochs={length}", "model.trainer.max_steps=null"]

    @classmethod
    def check(cls, factory: functools.partial, hardware: Hardware, env: Any) -> None:
        """Forecasters take whatever Lightning supports."""

    @classmethod
    def build(cls, factory: functools.partial, run: RunInputs) -> ForecastModule:
        """The window data module over ``run.data`` and the module ``factory`` makes on it."""
        task = dataclass_from(TaskConfig, factory.keywords.get("task"), "model.task")
        dm = WindowDataModule(run.data, task.num_classes, task.flat_threshold_bps)
        return factory(
            datamodule=dm,
            frictions=run.frictions,
            capital=run.capital,
            plot_dir=str(Path(run.out) / "plots"),
        )

    def datamodule(self) -> WindowDataModule | None:
        return self._dm

    def checkpointing(self) -> Checkpointing:
        return Checkpointing(monitor="val/loss", mode="min", filename="best-epoch{epoch:03d}")

    def trainer_settings(self) -> dict[str, Any]:
        cfg = self.trainer_cfg
        limit = cfg.limit_train_batches
        return {
            "max_epochs": int(cfg.max_epochs),
            "max_steps": int(cfg.max_steps) if cfg.max_steps is not None else -1,
            "gradient_clip_val": cfg.gradient_clip_val,
            "log_every_n_steps": int(cfg.log_every_n_steps),
            "limit_train_batches": limit if limit is not None else 1.0,
        }

    def callbacks(self) -> list[pl.Callback]:
        patience = self.trainer_cfg.early_stopping_patience
        if not patience:
            return []
        return [pl.callbacks.EarlyStopping(monitor="val/loss", patience=int(patience), mode="min")]

    def progress_bar(self) -> pl.Callback:
        return pl.callbacks.RichProgressBar(leave=True)

    def strategy(self, hardware: Hardware) -> StrategyPlan:
        return StrategyPlan(hardware.strategy, hardware.devices, hardware.num_nodes)

    def describe(self) -> str:
        window = self._dm.window if self._dm is not None else "?"
        return f"{self.name}: {type(self.net).__name__} on windows of {window} bars"

    def progress(self) -> str:
        return f"epoch {self.current_epoch} (step {self.global_step})"

    def layout(self) -> Layout:
        return Layout()  # inputs are feature windows, outputs classes: nothing to remap

    def inference(self) -> Inference:
        """Class probabilities ``(A, C)`` from a window ``(L, F_in)`` (and ``age`` ``(L,)`` for
        nets that use it)."""
        net = copy.deepcopy(self.net).cpu().eval()
        window = int(self._dm.window)
        inputs = {"window": (window, int(net.input_size))}
        if net.uses_age:
            inputs["age"] = (window,)
        sig = float_signature(inputs, {"probabilities": (net.num_assets, net.num_classes)})
        metadata = {
            "model": self.name,
            "window": window,
            "network": type(net).__name__,
            "uses_age": bool(net.uses_age),
        }
        return Inference(ForecasterInference(net), sig, "forecaster", metadata)

    def verification_inputs(self, inference: Inference, max_samples: int) -> tuple[np.ndarray, ...]:
        """Up to ``max_samples`` test windows ``(N, L, F_in)``, evenly spaced (and their ages
        ``(N, L)`` if the signature takes them)."""
        dataset = self._dm.dataset("test")
        n = len(dataset)
        picks = np.unique(np.linspace(0, n - 1, min(n, max_samples)).round().astype(int))
        items = [dataset[int(i)] for i in picks]
        window = torch.stack([it["x"] for it in items]).numpy().astype(np.float32)
        if "age" not in inference.signature.inputs:
            return (window,)
        return window, torch.stack([it["age"] for it in items]).numpy().astype(np.float32)

    # ------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities (B, A, C) of the next bar's return for each asset."""
        return self.net(x, age).softmax(-1)

    def _shared_step(self, batch: dict[str, torch.Tensor], part: str) -> torch.Tensor:
        logits = self.net(batch["x"], batch["age"]).float()
        flat_logits = logits.reshape(-1, self.num_classes)
        target = batch["y"].reshape(-1)
        loss = F.cross_entropy(flat_logits, target)
        self.metrics[f"{part}_metrics"].update(flat_logits.softmax(-1), target)
        on_step = part == "train"
        self.log(
            f"{part}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not on_step,
            batch_size=len(target),
        )
        self.log_dict(
            self.metrics[f"{part}_metrics"], on_step=False, on_epoch=True, prog_bar=part != "train"
        )
        if part in self._outputs:
            self._outputs[part].append((logits.softmax(-1).detach(), batch["t"].detach()))
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._score("val")
        every = self.attention_every_n_epochs
        if every and self.current_epoch % every == 0 and self.global_rank == 0:
            self._log_attention()

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def _score(self, part: str) -> None:
        """Backtest this epoch's predictions of ``part`` beside buy-and-hold; log the metrics."""
        outputs = self._outputs[part]
        if not outputs:
            return
        probs = torch.cat([p for p, _ in outputs])
        stamps = torch.cat([t for _, t in outputs])
        if self.trainer.world_size > 1:
            probs = self.all_gather(probs).reshape(-1, *probs.shape[1:])
            stamps = self.all_gather(stamps).reshape(-1)
        dm = self.trainer.datamodule
        positions = probabilities_to_targets(
            probs.double().cpu(), self.signal_cfg.mode, self.signal_cfg.long_only
        )
        stamps = stamps.cpu().long()
        ppy = dm.market.periods_per_year
        strategy_parts, hold_parts = [], []
        # A part of several spans (CPCV's test groups) is priced span by span, each from flat.
        for span in dm.split.spans(part):
            decisions = dm.span_decisions(span)
            first = int(decisions[0])
            targets = torch.zeros(len(decisions), dm.num_assets, dtype=torch.float64)
            inside = (stamps >= first) & (stamps <= int(decisions[-1]))
            targets[stamps[inside] - first] = positions[inside]
            strategy_parts.append(backtest(dm.market, targets, first, self.frictions, self.capital))
            if part not in self._buy_and_hold:
                steady = buy_and_hold_targets(len(decisions), dm.num_assets)
                hold_parts.append(backtest(dm.market, steady, first, self.frictions, self.capital))
        strategy = concat_results(strategy_parts, ppy)
        if part not in self._buy_and_hold:  # the same every epoch: price it once per split
            self._buy_and_hold[part] = concat_results(hold_parts, ppy)
        hold = self._buy_and_hold[part]
        self.reports[part] = {"strategy": strategy, "buy_and_hold": hold}
        ours = metrics_to_floats({k: v[0] for k, v in strategy.metrics.items()})
        theirs = metrics_to_floats({k: v[0] for k, v in hold.metrics.items()})
        logged = {f"{part}/{k}": ours[k] for k in REPORTED if k in ours}
        logged.update({f"{part}/buy_and_hold_{k}": theirs[k] for k in REPORTED if k in theirs})
        clean = loggable(logged, self.device)
        sharpe = clean.pop(f"{part}/sharpe")
        self.log_dict(clean, prog_bar=False, sync_dist=False)
        self.log(f"{part}/sharpe", sharpe, prog_bar=True, sync_dist=False)

    def _log_attention(self) -> None:
        net = self.net
        if not net.has_attention:
            return  # this network has no attention maps
        dm = self.trainer.datamodule
        dataset = dm.dataset("val")
        picks = np.linspace(0, len(dataset) - 1, 4).astype(int)
        items = [dataset[int(i)] for i in picks]
        x = torch.stack([it["x"] for it in items]).to(self.device)
        age = torch.stack([it["age"] for it in items]).to(self.device)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            _, attn = net.attention(x, age)
        net.train(was_training)
        image = attention_figure(attn.float().cpu().numpy(), [int(it["t"]) for it in items])
        if self.plot_dir:
            path = Path(self.plot_dir) / f"attention_epoch{self.current_epoch:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)
        log_image = getattr(self.logger, "log_image", None)
        if log_image is not None:
            from PIL import Image

            log_image(
                key="val/attention",
                images=[Image.open(io.BytesIO(image))],
                step=self.global_step,
                caption=[
                    f"epoch {self.current_epoch}: rows = queries, columns = window bars "
                    "(oldest left); averaged over heads"
                ],
            )

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer, total_steps=self.trainer.estimated_stepping_batches
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def attention_figure(attn: np.ndarray, decisions: list[int]) -> bytes:
    """PNG bytes of attention maps (windows x layers grid); ``attn`` is (W, layers, L, L)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows, layers = attn.shape[:2]
    fig, axes = plt.subplots(windows, layers, figsize=(2.6 * layers, 2.4 * windows), squeeze=False)
    for w in range(windows):
        for layer in range(layers):
            ax = axes[w, layer]
            ax.imshow(attn[w, layer], cmap="viridis", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if w == 0:
                ax.set_title(f"layer {layer}", fontsize=8)
            if layer == 0:
                ax.set_ylabel(f"bar {decisions[w]}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
