"""The mouse foundation model: a Geneformer-style BERT pretrained by masked-gene modelling.

One module per job, in the order data flows: ``vocab`` (the token dictionary), ``config`` (model
YAML <-> ``BertConfig``), ``data`` (tokenized shards and their lengths), ``sampler`` (length-grouped
distributed batches), ``collator`` (padding and 80/10/10 masking), ``objective`` (the masked-LM
loss), ``optim`` (AdamW and the LR schedule), ``distributed`` (process group and device),
``checkpoint`` (resumable state), ``train`` (the loop, run under ``torchrun``) and ``launch``
(the torchrun / srun command lines for one node or many).
"""
