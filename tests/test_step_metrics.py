"""publish_step: an agent's per-iteration numbers reach the loggers, the callback metrics and
the progress bar exactly where ``LightningModule.log_dict(on_step=True, on_epoch=False)`` puts
them, without Lightning's per-key bookkeeping."""

from __future__ import annotations

import csv

import pytorch_lightning as pl
import torch
from helpers.agents import dqn, trainer
from pytorch_lightning.loggers import CSVLogger

from modules.agents.step_metrics import as_floats, publish_step


class _Logs(pl.LightningModule):
    """A tiny regression whose training step logs three numbers, by log_dict or publish_step."""

    def __init__(self, publish: bool) -> None:
        super().__init__()
        self.publish = publish
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        logged = {
            "train/loss": loss.detach(),
            "train/step_mean": x.mean(),
            "train/index": float(batch_idx),
        }
        if self.publish:
            publish_step(self, logged, bar={"idx": "train/index"})
        else:
            self.log_dict(logged, on_step=True, on_epoch=False, batch_size=1)
            self.log("idx", float(batch_idx), prog_bar=True, logger=False, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(12, 2, generator=g)
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, x.sum(-1, keepdim=True)), batch_size=3
        )


def _train(tmp_path, publish: bool, every: int = 1) -> tuple[list[dict], pl.Trainer]:
    torch.manual_seed(0)
    logger = CSVLogger(tmp_path, name="publish" if publish else "log_dict", version=0)
    fit = pl.Trainer(
        max_epochs=2,
        logger=logger,
        log_every_n_steps=every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    fit.fit(_Logs(publish))
    with open(logger.experiment.metrics_file_path, newline="") as fh:
        return list(csv.DictReader(fh)), fit


def test_the_loggers_get_what_log_dict_sends_at_the_same_steps(tmp_path):
    ours, ours_trainer = _train(tmp_path, publish=True)
    lightning, lightning_trainer = _train(tmp_path, publish=False)
    assert len(ours) == 8  # 4 batches x 2 epochs
    assert ours == lightning  # every value, the step and the epoch columns, as text
    assert [row["step"] for row in ours] == [str(i) for i in range(8)]
    for key in ("train/loss", "train/step_mean", "train/index"):
        assert float(ours_trainer.callback_metrics[key]) == float(
            lightning_trainer.callback_metrics[key]
        )
        assert float(ours_trainer.logged_metrics[key]) == float(
            lightning_trainer.logged_metrics[key]
        )
    assert ours_trainer.progress_bar_metrics["idx"] == 3.0


def test_log_every_n_steps_thins_the_logger_as_lightning_does(tmp_path):
    ours, _ = _train(tmp_path, publish=True, every=3)
    lightning, _ = _train(tmp_path, publish=False, every=3)
    assert ours == lightning
    assert [row["step"] for row in ours] == ["2", "5"]


def test_as_floats_keeps_the_order_and_the_values():
    precise = 1.0 + 2.0**-40  # not a float32
    values = {"b": torch.tensor(2.5), "a": 1, "c": torch.tensor([[precise]], dtype=torch.float64)}
    assert as_floats(values) == {"b": 2.5, "a": 1.0, "c": precise}
    assert list(as_floats(values)) == ["b", "a", "c"]


def test_an_agents_iteration_is_in_the_callback_metrics_and_its_curves(agent_data):
    module = dqn(agent_data, iterations=3)
    seen: list[tuple[float, float]] = []

    class Look(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(
                (
                    float(trainer.callback_metrics["train/frames"]),
                    float(trainer.logged_metrics["train/iteration"]),
                )
            )

    trainer(3, callbacks=[Look()]).fit(module)
    assert seen == [(64.0, 1.0), (128.0, 2.0), (192.0, 3.0)]
    assert float(module.last_logged["train/frames"]) == 192.0
