"""The masked-gene-modelling loss, computed on the masked positions only.

``BertForMaskedLM`` projects every position onto the whole vocabulary (56k genes x 2,048
positions x batch: gigabytes of logits) although only ~15% of positions carry a label. Running the
encoder, gathering the masked positions and applying the prediction head to those alone gives the
same loss at a fraction of the memory and time, and the saved weights are still a plain
``BertForMaskedLM``. The loss is returned as a sum with its token count so that the training loop
can normalise over all micro-batches and ranks of an optimizer step (a token-weighted mean).
A packed batch (``cellfate.foundation.packing``) adds per-cell position ids and cell boundaries;
the model must then run the packed attention (``use_packed_attention``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellfate.foundation.collator import IGNORE_INDEX


class MaskedLMObjective(nn.Module):
    """Wraps a ``BertForMaskedLM`` so DDP sees one module whose forward returns the loss parts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        **packed,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of cross-entropy over masked tokens, number of masked tokens); no mask = no padding.

        ``position_ids`` and ``packed`` (``cu_seqlens``, ``max_seqlen``, ``spans``) come with a packed
        batch: its attention mask only marks cell tokens and never reaches the model.
        """
        if packed:
            attention_mask = None
        hidden = self.model.bert(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **packed
        ).last_hidden_state
        selected = labels != IGNORE_INDEX
        logits = self.model.cls(hidden[selected])
        loss_sum = F.cross_entropy(logits.float(), labels[selected], reduction="sum")
        return loss_sum, selected.sum()
