"""Model loading and log-prob computation shared by the learner and the reference.

Log-probs are computed only where they are needed: the decoder runs over whole
sequences, but the vocabulary projection and log-softmax (the most expensive part
on CPU for a 49k vocabulary) run only on the positions that predict a trainable
token. Training and reference agree with vLLM's convention: the log-prob of the
sampled token under the raw (temperature 1) distribution.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from contextlib import contextmanager, nullcontext

import numpy as np
import pyarrow as pa
import torch

from rayrl.actors.logprobs import sampled_logprobs
from rayrl.hardware import memory_available_fraction, resolve_dtype


def pick_device() -> torch.device:
    """CUDA when this actor was given a GPU, else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def set_threads(num_threads: int | None) -> int:
    """Use `num_threads` torch threads (default: all cores; Ray sets 1 per logical CPU)."""
    n = num_threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


@contextmanager
def threads(num_threads: int):
    """Run the block with `num_threads` torch threads, then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def attention_kernel(attention: str, device: torch.device, trainable: bool) -> str:
    """The transformers attention implementation for a role's passes. "auto": eager for
    a trained role on CPU, else sdpa. On CPU, torch's fused attention kernel is the faster
    forward but the slower backward on a rollout batch's short sequences: a learner update
    of the bench's batch took 9.5 s eager against 10.9 s sdpa (medians of 6, alternating,
    one process), the reference's forward 2.9 s against 2.8 s."""
    if attention == "auto":
        return "eager" if device.type == "cpu" and trainable else "sdpa"
    return attention


def load_causal_lm(
    path: str,
    device: torch.device,
    trainable: bool,
    gradient_checkpointing: bool = False,
    attention: str = "auto",
):
    """Load a Hugging Face causal LM in float32 (master weights) on `device`.

    Args:
        gradient_checkpointing: recompute each decoder layer's activations in the
            backward pass instead of keeping them (less memory, about a third more compute).
        attention: "auto", "sdpa" or "eager" (`attention_kernel`).
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation=attention_kernel(attention, device, trainable)
    )
    model.to(device)
    model.train(trainable)
    model.requires_grad_(trainable)
    if not trainable:
        model.eval()
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def rng_state(rng: np.random.Generator, **extra) -> dict:
    """torch's and `rng`'s generator states (what a resumed role needs to draw the same)."""
    return {"torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state, **extra}


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = state["numpy_rng"]


_heap_frozen = False  # release_memory's first call freezes the long-lived heap

RELEASE_BELOW = 0.25
"""`release_memory="auto"` gives the heap back when less than this fraction of the
machine's (or container's) memory is left after a pass."""


def release_memory(device: torch.device, enabled: bool | str = True) -> None:
    """Give memory freed by a finished pass back to the system.

    On CPU, glibc keeps the activations of a forward/backward pass in its heap after
    they are freed, so an idle learner or critic would hold its peak (~6 GB for the
    135M default at 16 x 160 tokens) while the other roles take their turn; trimming
    leaves the weights and optimizer state (~2 GB), and the next pass faults the pages
    in again. `enabled="auto"` trims only when memory is short (`RELEASE_BELOW`).
    On GPU, torch's caching allocator keeps its blocks for the next pass, which is what
    it is for, so nothing is done: the garbage collection alone cost a learner update
    0.2 s of its 0.5 s on an H200 (bench_learner_device.py's batch, 2026-12-04).
    The first call also freezes what survives it (`gc.freeze`: the loaded model, the
    libraries, the optimizer's state) out of the collector's reach, as vLLM does after
    its start: a full collection then scans only what later passes leave, not ~400k
    long-lived objects (0.23 s a call on the dev machine, 2026-12-04; a reference pass of
    the bench's batch 4.68 s against 5.75 s, medians of three, alternated in one process).
    Frozen objects are still freed when nothing refers to them; only a reference cycle
    among them would outlive the role.
    """
    global _heap_frozen
    if not enabled or device.type != "cpu":
        return
    gc.collect()
    if not _heap_frozen:
        gc.freeze()
        _heap_frozen = True
    if enabled == "auto" and memory_available_fraction() >= RELEASE_BELOW:
        return
    _trim_heap()


def _trim_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's `malloc_trim`)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def autocast(device: torch.device, dtype_name: str):
    """bf16 autocast on CPU and GPU when asked for ("auto": where bf16 is native), else a no-op."""
    if resolve_dtype(dtype_name, device.type) == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class SequenceBatch:
    """Columnar rollout batch (pyarrow) viewed as per-sequence tensors.

    Columns used: `input_ids` (list<int32>) and `loss_mask` (list<int8>, 1 where the
    token was generated by the policy). Masked tokens are numbered in table order,
    row-major: this is the order of every flat per-token array (log-probs,
    reference log-probs) exchanged between roles.
    """

    def __init__(self, table: pa.Table):
        self.table = table
        ids_col = table.column("input_ids").combine_chunks()
        mask_col = table.column("loss_mask").combine_chunks()
        offsets = ids_col.offsets.to_numpy()
        ids = ids_col.values.to_numpy(zero_copy_only=False).astype(np.int64)
        mask = mask_col.values.to_numpy(zero_copy_only=False).astype(bool)
        self.lengths = np.diff(offsets)
        self.ids = [torch.from_numpy(ids[offsets[i] : offsets[i + 1]]) for i in range(len(self.lengths))]
        self.masks = [torch.from_numpy(mask[offsets[i] : offsets[i + 1]]) for i in range(len(self.lengths))]
        counts = np.array([int(m.sum()) for m in self.masks], dtype=np.int64)
        self.token_counts = counts
        # tokens before each row's first trainable one: its prompt (packed passes share it)
        self.prompt_lengths = np.array(
            [
                int(m.numpy().argmax()) if c else n
                for m, c, n in zip(self.masks, counts, self.lengths, strict=True)
            ],
            dtype=np.int64,
        )
        self.token_offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_tokens(self) -> int:
        """Trainable tokens in the batch."""
        return int(self.token_offsets[-1])

    def micro_batches(
        self, rows: np.ndarray, size: int, packing: bool = False, max_tokens: int | None = None
    ) -> list[np.ndarray]:
        """Split `rows` into micro-batches: of similar lengths (less padding), or with
        `packing`, rows of one prompt together (a packed pass holds each prompt once).
        `size` rows each, or with `max_tokens` as many as keep the pass's tokens (its rows
        times their width, padding included) within it; a row longer than that gets a pass
        of its own."""
        if packing:
            first: dict[bytes, int] = {}
            keys = [first.setdefault(self.prompt_key(r), i) for i, r in enumerate(rows)]
            rows = rows[np.argsort(keys, kind="stable")]
        else:
            rows = rows[np.argsort(self.lengths[rows], kind="stable")]
        if max_tokens is None:
            return [rows[i : i + size] for i in range(0, len(rows), size)]
        cuts, start = [], 0
        packs: dict = {}  # the pass's rows as passed (one per prompt when packing): tokens each
        width = 0
        for i, r in enumerate(rows):
            key, shared = (self.prompt_key(r), self.prompt_length(r)) if packing else (i, 0)
            row = packs.get(key, shared) + int(self.lengths[r]) - shared
            if i > start and (len(packs) + (key not in packs)) * max(width, row) > max_tokens:
                cuts.append(rows[start:i])
                start, packs, width, row = i, {}, 0, int(self.lengths[r])
            packs[key] = row
            width = max(width, row)
        return [*cuts, rows[start:]] if len(rows) else []

    def prompt_length(self, row: int) -> int:
        """Tokens of `row` before its first trainable one (its prompt)."""
        return int(self.prompt_lengths[row])

    def prompt_key(self, row: int) -> bytes:
        return self.ids[row][: self.prompt_lengths[row]].numpy().tobytes()

    def packed(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Forward inputs of `rows` packed by prompt: one row per distinct prompt, holding
        the prompt once and then the continuation of every row that starts with it. A
        continuation attends to its prompt and to itself (a 4-D attention mask), at the
        positions it has in its own row. A group's samples share their prompt, so this
        computes fewer tokens than padding, and attention stays within a group (one packed
        row for the whole micro-batch would cost attention quadratic in all its tokens).
        Packed rows are right-padded; a padding position attends only to itself.
        `predictor` and `targets` give, for every trainable token in the order
        `flat_index(rows)` lists them, the flat (row-major) position whose hidden state
        predicts it, and the token itself."""
        groups: dict[bytes, list[int]] = {}
        for r in rows:
            groups.setdefault(self.prompt_key(r), []).append(int(r))
        packs = []  # per packed row: (ids, positions, owner row or -1 for the prompt)
        where: dict[int, np.ndarray] = {}  # row -> its tokens' positions within its packed row
        for members in groups.values():
            p = self.prompt_length(members[0])
            ids, pos, own = [self.ids[members[0]][:p].numpy()], [np.arange(p)], [np.full(p, -1)]
            at = p
            for r in members:
                n = int(self.lengths[r]) - p
                ids.append(self.ids[r][p:].numpy())
                pos.append(np.arange(p, p + n))
                own.append(np.full(n, r))
                where[r] = np.concatenate([np.arange(p), np.arange(at, at + n)])
                at += n
            packs.append((np.concatenate(ids), np.concatenate(pos), np.concatenate(own)))
        width = max(len(ids) for ids, _, _ in packs)
        ids_t = torch.zeros(len(packs), width, dtype=torch.long)
        pos_t = torch.zeros(len(packs), width, dtype=torch.long)
        own_t = torch.full((len(packs), width), -2, dtype=torch.long)  # -2: padding
        for g, (ids, pos, own) in enumerate(packs):
            ids_t[g, : len(ids)] = torch.from_numpy(ids)
            pos_t[g, : len(ids)] = torch.from_numpy(pos)
            own_t[g, : len(ids)] = torch.from_numpy(own)
        real = own_t != -2
        allowed = (
            real[:, None, :]
            & real[:, :, None]
            & (pos_t[:, None, :] <= pos_t[:, :, None])
            & ((own_t[:, None, :] == -1) | (own_t[:, None, :] == own_t[:, :, None]))
        )
        allowed |= torch.diag_embed(~real)  # padding sees itself: no row without a key
        pack_of = {r: g for g, members in enumerate(groups.values()) for r in members}
        predictor, targets = [], []
        for r in rows:
            t = np.flatnonzero(self.masks[r].numpy())
            if len(t) and t[0] == 0:
                raise ValueError(f"row {r}: its first token is marked trainable, but nothing predicts it")
            predictor.append(pack_of[int(r)] * width + where[int(r)][t - 1])
            targets.append(self.ids[r].numpy()[t])
        return {
            "input_ids": ids_t.to(device),
            "attention_mask": allowed[:, None].to(device),
            "position_ids": pos_t.to(device),
            "predictor": torch.from_numpy(np.concatenate(predictor)).to(device),
            "targets": torch.from_numpy(np.concatenate(targets)).to(device),
        }

    def forward_inputs(
        self, rows: np.ndarray, device: torch.device, packing: bool
    ) -> dict[str, torch.Tensor]:
        """Keyword arguments of a `TokenLogprobs` / `ValueModel` pass over `rows`."""
        if packing:
            return self.packed(rows, device)
        ids, attn, mask = self.padded(rows, device)
        return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask}

    def padded(self, rows: np.ndarray, device: torch.device):
        """(input_ids, attention_mask, loss_mask) right-padded for `rows`."""
        pad = torch.nn.utils.rnn.pad_sequence
        ids = pad([self.ids[r] for r in rows], batch_first=True, padding_value=0)
        attn = pad([torch.ones(len(self.ids[r]), dtype=torch.long) for r in rows], batch_first=True)
        mask = pad([self.masks[r] for r in rows], batch_first=True, padding_value=False)
        return ids.to(device), attn.to(device), mask.to(device)

    def span_ends(self, row: int) -> np.ndarray:
        """Flat positions of the last token of each trainable span of `row` (one span per
        engine call, so one per assistant turn), in order."""
        m = self.masks[row].numpy()
        nxt = np.append(m[1:], False)
        ends = np.flatnonzero(m & ~nxt)
        return self.token_offsets[row] + np.cumsum(m)[ends] - 1

    def flat_index(self, rows: np.ndarray) -> np.ndarray:
        """Positions in the flat per-token arrays of the masked tokens of `rows`, in the
        order `token_logprobs` returns them (row by row)."""
        return (
            np.concatenate([np.arange(self.token_offsets[r], self.token_offsets[r + 1]) for r in rows])
            if len(rows)
            else np.zeros(0, dtype=np.int64)
        )


def predicting_states(
    decoder, input_ids, attention_mask, loss_mask=None, position_ids=None, predictor=None, targets=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states that predict the scored tokens, those tokens), flattened row by row.

    Padded inputs (B, T) score the tokens where `loss_mask` is set (position t-1 predicts
    token t; the first token is never scored). Packed inputs (`SequenceBatch.packed`:
    a row per prompt, a 4-D boolean attention mask, `position_ids`) score `targets` from the
    states at `predictor`.
    """
    if predictor is None:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        select = loss_mask[:, 1:]
        return hidden[:, :-1][select], input_ids[:, 1:][select]
    impl = getattr(decoder.config, "_attn_implementation", "sdpa")
    if impl == "eager":  # eager attention adds its mask: 0 where allowed, a large negative elsewhere
        attention_mask = torch.zeros(
            attention_mask.shape, dtype=torch.float32, device=attention_mask.device
        ).masked_fill(~attention_mask, torch.finfo(torch.float32).min)
    elif impl != "sdpa":
        raise ValueError(
            f"packing needs sdpa or eager attention, the model uses {impl!r} (set packing: false)"
        )
    hidden = decoder(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    ).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1])[predictor], targets


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    position_ids: torch.Tensor | None = None,
    predictor: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the scored tokens, flattened row by row.

    Args:
        model: a Hugging Face causal LM.
        input_ids / attention_mask / loss_mask: (B, T); loss_mask[b, t] marks tokens to
            score. Or packed inputs (see `predicting_states`).
        with_entropy: also return the predictive entropy at those positions.
        entropy_grad: keep the entropy in the autograd graph (for an entropy bonus).
    """
    h, targets = predicting_states(
        model.get_decoder(), input_ids, attention_mask, loss_mask, position_ids, predictor, targets
    )
    logits = model.get_output_embeddings()(h)
    return sampled_logprobs(logits, targets, with_entropy, entropy_grad)


class TokenLogprobs(torch.nn.Module):
    """A causal LM as one module whose forward is `token_logprobs`.

    Training strategies run their forward through this wrapper, so that an engine
    around it (DeepSpeed's) sees every forward pass: ZeRO-3 counts micro-batches in
    the engine's forward and would otherwise overwrite accumulated gradients.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        """`token_logprobs` of the wrapped model (same arguments after `model`)."""
        return token_logprobs(self.model, *args, **kwargs)


@torch.no_grad()
def batch_logprobs(
    forward,
    batch: SequenceBatch,
    micro_batch_size: int,
    device: torch.device,
    autocast_dtype: str,
    rows: np.ndarray | None = None,
    num_passes: int | None = None,
    packing: bool = False,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Flat float32 per-token outputs of `forward` (log-probs, or a critic's values) for
    the trainable tokens of `rows`, in table order.

    Args:
        forward: a `TokenLogprobs` or `ValueModel` (or an engine wrapping one).
        rows: a contiguous ascending block of rows (see `row_shard`); default every row.
        num_passes: make exactly this many forward passes, repeating a micro-batch whose
            output is dropped when the rows need fewer (ZeRO-3's forward is a collective
            that every rank enters equally often).
        packing: pass each micro-batch packed (`SequenceBatch.packed`) instead of padded.
        max_tokens: cut micro-batches by this many tokens a pass instead of by
            `micro_batch_size` rows (`SequenceBatch.micro_batches`).
    """
    rows = np.arange(len(batch)) if rows is None else rows
    base = int(batch.token_offsets[rows[0]]) if len(rows) else 0
    out = np.zeros(int(batch.token_counts[rows].sum()), dtype=np.float32)
    micros = batch.micro_batches(rows, micro_batch_size, packing, max_tokens)
    passes = [(m, True) for m in micros]
    if num_passes is not None:
        filler = micros[0] if micros else np.zeros(1, dtype=np.int64)
        passes += [(filler, False)] * (num_passes - len(micros))
    for micro, keep in passes:
        inputs = batch.forward_inputs(micro, device, packing)
        with autocast(device, autocast_dtype):
            result = forward(**inputs)
        if keep:
            values = result[0] if isinstance(result, tuple) else result
            out[batch.flat_index(micro) - base] = values.float().cpu().numpy()
    return out


def row_shard(num_rows: int, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s contiguous block of `num_rows` rows (sizes differ by at most one).

    Inference roles with several ranks (reference, critic values) each score one block;
    as the flat per-token order is row-major, their flat outputs concatenated in rank
    order are the whole batch's.
    """
    return np.array_split(np.arange(num_rows), world_size)[rank]


def trainable_values(batch: pa.Table, column: str) -> np.ndarray:
    """Flat float32 values of a per-token column at the trainable positions, in table order."""
    values = batch.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    mask = batch.column("loss_mask").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(bool)
    if len(values) != len(mask):
        raise ValueError(f"column {column!r} is not aligned with input_ids")
    return values[mask].astype(np.float32)


def with_token_columns(batch: pa.Table, columns: dict[str, np.ndarray]) -> pa.Table:
    """`batch` plus per-token float32 columns aligned with input_ids, from flat arrays
    over the trainable tokens (0 at every other position)."""
    ids = batch.column("input_ids").combine_chunks()
    mask = batch.column("loss_mask").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(bool)
    offsets = pa.array(ids.offsets.to_numpy() - ids.offsets.to_numpy()[0], type=pa.int32())
    for name, flat in columns.items():
        flat = np.asarray(flat, dtype=np.float32)
        if flat.shape != (int(mask.sum()),):
            raise ValueError(f"{name}: {flat.shape[0]} values for {int(mask.sum())} trainable tokens")
        dense = np.zeros(mask.shape[0], dtype=np.float32)
        dense[mask] = flat
        column = pa.ListArray.from_arrays(offsets, pa.array(dense, type=pa.float32()))
        if name in batch.column_names:
            batch = batch.drop_columns([name])
        batch = batch.append_column(name, column)
    return batch
