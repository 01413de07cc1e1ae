"""The forecasting LightningModule: next-bar direction per asset, scored as a trading signal.

Its signal becomes target positions that the shared simulator prices on the validation and
test splits, beside buy-and-hold of the same assets.
"""

from __future__ import annotations

import inspect
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC

from datamodules.errors import ConfigError
from envs.backtest import BacktestResult, backtest, buy_and_hold_targets
from envs.frictions import Frictions
from envs.metrics import metrics_to_floats

log = logging.getLogger(__name__)

SIGNALS = ("argmax", "expected")
REPORTED = (
    "sharpe",
    "sortino",
    "annual_return",
    "total_return",
    "max_drawdown",
    "annual_volatility",
    "calmar",
    "win_rate",
    "annual_turnover",
    "exposure",
    "num_trades",
)


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

    ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``); the scheduler
    gets ``total_steps`` and is stepped per batch. Validation and test predictions are turned
    into positions (``signal``, ``long_only``) and backtested with ``frictions`` on the
    DataModule's market; the results are kept in ``self.reports[split]``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 2,
        signal: str = "argmax",
        long_only: bool = False,
        frictions: Frictions | None = None,
        capital: float = 100_000.0,
        attention_every_n_epochs: int = 0,
        plot_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["net", "optimizer", "scheduler", "frictions"], logger=False
        )
        if signal not in SIGNALS:
            raise ConfigError(
                f"model.signal.mode is '{signal}'; choose one of {', '.join(SIGNALS)}."
            )
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.frictions = frictions or Frictions()
        metrics = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_classes, average="micro"),
                "balanced_accuracy": MulticlassAccuracy(num_classes, average="macro"),
                "auroc": MulticlassAUROC(num_classes),
            }
        )
        self.metrics = nn.ModuleDict(
            {f"{p}_metrics": metrics.clone(prefix=f"{p}/") for p in ("train", "val", "test")}
        )
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}
        self.reports: dict[str, dict[str, BacktestResult]] = {}
        self._buy_and_hold: dict[str, BacktestResult] = {}

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
        every = self.hparams.attention_every_n_epochs
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
        decisions = dm.decisions(part)
        first = int(decisions[0])
        targets = torch.zeros(len(decisions), dm.num_assets, dtype=torch.float64)
        positions = probabilities_to_targets(
            probs.double().cpu(), self.hparams.signal, self.hparams.long_only
        )
        targets[stamps.cpu().long() - first] = positions
        strategy = backtest(dm.market, targets, first, self.frictions, self.hparams.capital)
        if part not in self._buy_and_hold:  # the same every epoch: price it once per split
            self._buy_and_hold[part] = backtest(
                dm.market,
                buy_and_hold_targets(len(decisions), dm.num_assets),
                first,
                self.frictions,
                self.hparams.capital,
            )
        hold = self._buy_and_hold[part]
        self.reports[part] = {"strategy": strategy, "buy_and_hold": hold}
        ours = metrics_to_floats({k: v[0] for k, v in strategy.metrics.items()})
        theirs = metrics_to_floats({k: v[0] for k, v in hold.metrics.items()})
        logged = {f"{part}/{k}": ours[k] for k in REPORTED if k in ours}
        logged.update({f"{part}/buy_and_hold_{k}": theirs[k] for k in REPORTED if k in theirs})
        clean = {k: (v if np.isfinite(v) else 0.0) for k, v in logged.items()}
        sharpe = clean.pop(f"{part}/sharpe")
        self.log_dict(clean, prog_bar=False, sync_dist=False)
        self.log(f"{part}/sharpe", sharpe, prog_bar=True, sync_dist=False)

    def _log_attention(self) -> None:
        net = self.net
        if "return_attention" not in inspect.signature(net.forward).parameters:
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
            _, attn = net(x, age, return_attention=True)
        net.train(was_training)
        image = attention_figure(attn.float().cpu().numpy(), [int(it["t"]) for it in items])
        if self.hparams.plot_dir:
            path = Path(self.hparams.plot_dir) / f"attention_epoch{self.current_epoch:03d}.png"
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
                    f"epoch {self.current_epoch}: rows = queries, columns = window bars (oldest left); averaged over heads"
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
