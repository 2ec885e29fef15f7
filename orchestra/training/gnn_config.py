"""The hyperparameters and data of a GNN router training run (:class:`GNNTrainConfig`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from orchestra.policies.gnn.graph import GraphData

__all__ = ["GNNTrainConfig"]


class GNNTrainConfig(BaseModel):
    """Everything that defines a GNN training run; saved with every checkpoint and artifact.

    Args:
        data: outcome table name or path (``routerbench``, ``llmrouter``, a file).
        exclude_models: models dropped from training (to test adding them at serving time).
        embedder: ``minilm`` (default) or ``hashing`` (tests).
        views: how queries are embedded (``full`` text and its ``tail``; see
            :func:`~orchestra.policies.gnn.graph.embed_query_texts`).
        val_fraction: share of training queries held out for validation / early stopping.
        epochs: most epochs.
        patience: stop after this many epochs without a better validation AIQ.
        min_epochs: never stop before this epoch.
        lr / weight_decay: AdamW.
        hidden / layers / dropout / attention: the network (:class:`~orchestra.policies.gnn.model.ModelConfig`).
        k: nearest context queries linked to each query (message passing).
        vote_k: nearest context queries whose outcomes the neighbour vote reads.
        target_fraction: share of training queries held out as targets per step.
        edge_dropout: share of context outcome edges dropped per step.
        task_dropout: share of targets not linked to their task (serving may not know it).
        cold_model_prob: chance per step that one model keeps only 0..``max_profile`` edges.
        max_profile: most outcome edges a cold model keeps.
        cost_weight: weight of the cost loss.
        ema_decay: per-step decay of an exponential moving average of the weights, which is
            what is validated, kept and served (0: the raw weights). Averaging smooths the
            step-to-step noise of a small, noisy training signal.
        seed: everything random derives from it.
        split_seed: seed of the train / validation split only (default: ``seed``), to compare
            initialisations on the same validation queries.
    """

    model_config = ConfigDict(extra="forbid")

    data: str = "routerbench"
    exclude_models: list[str] = Field(default_factory=list)
    embedder: Literal["minilm", "hashing"] = "minilm"
    views: list[Literal["full", "tail"]] = Field(
        default_factory=lambda: ["full", "tail"]  # type: ignore[arg-type,return-value]
    )
    val_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    epochs: int = Field(default=150, ge=1)
    patience: int = Field(default=25, ge=1)
    min_epochs: int = Field(default=10, ge=0)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    hidden: int = Field(default=64, ge=4)
    layers: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    attention: bool = True
    k: int = Field(default=30, ge=1)
    vote_k: int = Field(default=100, ge=1)
    target_fraction: float = Field(default=0.25, gt=0, lt=1)
    edge_dropout: float = Field(default=0.1, ge=0, lt=1)
    task_dropout: float = Field(default=0.2, ge=0, le=1)
    cold_model_prob: float = Field(default=0.5, ge=0, le=1)
    max_profile: int = Field(default=20, ge=0)
    cost_weight: float = Field(default=0.5, ge=0)
    ema_decay: float = Field(default=0.95, ge=0, lt=1)
    seed: int = 0
    split_seed: int | None = None

    def model_shape(self, data: GraphData) -> Any:
        from orchestra.policies.gnn.model import ModelConfig

        return ModelConfig(emb_dim=data.dim, query_dim=data.query_dim, hidden=self.hidden,
                           layers=self.layers, dropout=self.dropout, attention=self.attention)
