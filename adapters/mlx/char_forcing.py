"""A second, teacher-forced decoder pass that spells each window's decoded words one character a token (issue 23
item 2; Yeh, Meng, Tang 2025): the alignment heads attend to a character's sound more sharply than to a word
piece's, so DTW over the characters' rows places each word's first character, hence the word's start, closer to
where it is heard.

The pass feeds ``<|startoftranscript|>...<|notimestamps|>``, then the words' characters (each character encoded
alone: one token, or several byte-level tokens for a character the vocabulary does not hold whole), a space token
between words. One forward pass per batch of windows over the encoder output the first pass computed: no KV cache,
no sampling, and it stops at the last layer that holds an alignment head (nothing after it, no vocabulary
projection, is needed: only those heads' cross-attention scores). Sequences are right-padded; the causal mask keeps
the padding out of every real position, so no other mask is needed. They go through in groups of similar length
(sorted), so that little of the work is padding.

Spelled out, 30 s of fast speech can outrun the decoder's context (448 positions: the learned positional embedding
ends there); such a window's words are spelled in several runs, each forced alone over the whole window, and the
aligner gives each run its stretch of the window (``adapters/dtw/aligner.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np
from attrs import evolve
from mlx_whisper.tokenizer import get_tokenizer
from mlx_whisper.whisper import Whisper
from numpy.typing import NDArray

from onepass_whisper.adapters.dtw.char_heads import SHAPE_ROWS, CharHeadChoice, HeadStore
from onepass_whisper.adapters.mlx.char_forcing_host import HostCharForcer
from onepass_whisper.adapters.mlx.spelling import CharTokens, spelled_runs
from onepass_whisper.adapters.mlx.step.common import fused_gelu
from onepass_whisper.adapters.mlx.weights import decoder_weights
from onepass_whisper.domain.audio import CharacterRows, DecodedChunk, Window

FORCED_BATCH = 8  # sequences per forward: bounds the scores' memory (8 × heads × 448 × 1500 floats)


class CharForcer:
    """The pass for ``MlxWhisperDecoder``'s chunks: their words spelled and forced, their rows put on them."""

    def __init__(
        self, model: Whisper, alignment_heads: Sequence[tuple[int, int]], store: HeadStore | None = None
    ) -> None:
        """``store``: where the choice of the heads whose rows time the characters is kept (``char_heads.py``)."""
        self.model = model
        self.alignment_heads = list(alignment_heads)
        # on the CPU the numpy pass (MLX's CPU ``exp`` is scalar code: ``char_forcing_host.py``)
        self.host = HostCharForcer(decoder_weights(model)) if mx.default_device() == mx.cpu else None
        dims = model.dims
        every_head = [(layer, head) for layer in range(dims.n_text_layer) for head in range(dims.n_text_head)]
        self.choice = CharHeadChoice(alignment_heads, every_head, store)  # whose rows time the characters

    def spell(
        self,
        chunks: Sequence[DecodedChunk],
        windows: Sequence[Window],
        features: mx.array | None,
        encode: Callable[[Sequence[Window]], mx.array],
        task: str,
    ) -> list[DecodedChunk]:
        """``chunks`` (of ``windows``, whose encoder output ``features`` is, in their order) with their rows
        (``DecodedChunk.char_rows``), one pass per language among them; ``features`` None (a refilled pass keeps
        none): the spoken chunks' windows are encoded again with ``encode``."""
        spoken = [n for n, c in enumerate(chunks) if c.segments]
        spelled = list(chunks)
        if not spoken:
            return spelled
        if features is None:
            features = encode([chunks[n].window for n in spoken])
            row_of = {n: k for k, n in enumerate(spoken)}
        else:
            place = {id(w): i for i, w in enumerate(windows)}
            row_of = {n: place[id(chunks[n].window)] for n in spoken}
        for language in sorted({chunks[n].language for n in spoken}):
            group = [n for n in spoken if chunks[n].language == language]
            tokenizer = get_tokenizer(
                self.model.is_multilingual, num_languages=self.model.num_languages, language=language, task=task
            )
            prefix = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
            room = self.model.dims.n_text_ctx - len(prefix)
            space = tokenizer.encode(" ")
            runs = [
                spelled_runs([w for s in chunks[n].segments for w in s.words], tokenizer.encode, space, room)
                for n in group
            ]
            group_features = features[mx.array([row_of[n] for n in group])]
            frames = [chunks[n].window.num_frames for n in group]
            if self.choice.chosen is None and self.choice.shape_heads is None:
                self.choice.rank_shapes(self._shape_samples(group_features, runs, prefix, frames))
            found = character_rows(self.model, group_features, runs, prefix, self.choice.capture, frames, self.host)
            for n, rows in zip(group, found):
                spelled[n] = evolve(chunks[n], char_rows=rows)
        return self.choice.weigh(spelled)

    def _shape_samples(
        self,
        features: mx.array,
        runs: Sequence[Sequence[tuple[int, CharTokens]]],
        prefix: Sequence[int],
        frames: Sequence[int],
    ) -> list[NDArray[np.float32]]:
        """Every head's rows (all layers) over the first ``SHAPE_ROWS`` characters of each window's first run: what
        the shape heads are ranked by (``CharHeadChoice.rank_shapes``). A pass over those characters alone: the
        causal mask makes their rows the same as in the whole run's pass."""
        cut = [
            [
                (first, CharTokens(spelled.tokens[:SHAPE_ROWS], tuple(f for f in spelled.firsts if f < SHAPE_ROWS)))
                for first, spelled in its[:1]
            ]
            for its in runs
        ]
        found = character_rows(self.model, features, cut, prefix, self.choice.pool, frames, self.host)
        return [rows.attention for window in found for rows in window]


def character_rows(
    model: Whisper,
    features: mx.array,
    runs: Sequence[Sequence[tuple[int, CharTokens]]],
    prefix: Sequence[int],
    heads: Sequence[tuple[int, int]],
    frames: Sequence[int],
    host: HostCharForcer | None = None,
) -> list[tuple[CharacterRows, ...]]:
    """Per window (``features``' rows), its ``runs`` (``spelled_runs``) forced: their ``CharacterRows``, cropped
    to its ``frames`` real frames. On ``host`` (the CPU backend's numpy pass) each run goes alone; in MLX all
    windows' runs go through together, ``FORCED_BATCH`` of similar length at a time."""
    flat = [(window, first, spelled) for window, its in enumerate(runs) for first, spelled in its]
    found: dict[int, NDArray[np.float32]] = {}
    if host is not None:
        rows = host.rows(
            np.asarray(features, np.float32),
            [spelled.tokens for _, _, spelled in flat],
            [window for window, _, _ in flat],
            prefix,
            [frames[window] for window, _, _ in flat],
            heads,
        )
        found.update(enumerate(rows))
    order = [] if host is not None else sorted(range(len(flat)), key=lambda n: len(flat[n][2].tokens))
    for start in range(0, len(order), FORCED_BATCH):
        group = order[start : start + FORCED_BATCH]
        windows = [flat[n][0] for n in group]
        found.update(
            zip(
                group,
                forced_rows(
                    model,
                    features[mx.array(windows)],
                    [flat[n][2].tokens for n in group],
                    prefix,
                    heads,
                    [frames[w] for w in windows],
                ),
            )
        )
    result: list[list[CharacterRows]] = [[] for _ in runs]
    for n, (window, first, spelled) in enumerate(flat):
        result[window].append(CharacterRows(first, np.array(spelled.firsts, np.int32), found[n]))
    return [tuple(r) for r in result]


def forced_rows(
    model: Whisper,
    features: mx.array,
    sequences: Sequence[Sequence[int]],
    prefix: Sequence[int],
    heads: Sequence[tuple[int, int]],
    frames: Sequence[int],
) -> list[NDArray[np.float32]]:
    """Per window (``features``' rows, windows × audio ctx × state), the cross-attention scores of ``heads`` at
    the rows DTW reads: ``prefix``'s last position's, then each of the window's ``sequences`` tokens' (row ``i``
    is the position that predicts token ``i``; the last predicts end-of-text): heads × (tokens + 1) × its
    ``frames`` real frames, raw pre-softmax QK as float32."""
    count = len(sequences)
    length = len(prefix) + max((len(s) for s in sequences), default=0)
    batch = np.full((count, length), prefix[-1], np.int32)  # padding: any token (the causal mask hides it)
    for i, sequence in enumerate(sequences):
        batch[i, : len(prefix)] = prefix
        batch[i, len(prefix) : len(prefix) + len(sequence)] = sequence
    scores = _head_scores(model, features, mx.array(batch), heads)  # windows × heads × positions × audio ctx
    most = max(frames, default=0)
    start = len(prefix) - 1
    host = np.array(scores[:, :, start:, :most].astype(mx.float32))
    return [np.ascontiguousarray(host[i, :, : len(s) + 1, : frames[i]]) for i, s in enumerate(sequences)]


def _head_scores(model: Whisper, features: mx.array, tokens: mx.array, heads: Sequence[tuple[int, int]]) -> mx.array:
    """The decoder's forward over ``tokens`` (windows × positions) up to the last layer of ``heads``: their
    cross-attention QK, windows × heads × positions × audio ctx, in ``heads``' order."""
    decoder = model.decoder
    positions = tokens.shape[1]
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[:positions]
    mask = decoder._mask[:positions, :positions]
    last = max(layer for layer, _ in heads)
    found: dict[tuple[int, int], mx.array] = {}
    for layer in range(last + 1):
        block = decoder.blocks[layer]
        y, _, _ = block.attn(block.attn_ln(x), mask=mask)
        x = x + y
        wanted = [head for at, head in heads if at == layer]
        if layer == last:  # only its heads' scores: no attention output, no MLP
            qk = _cross_scores(block.cross_attn, block.cross_attn_ln(x), features, wanted)
            found.update(((layer, head), qk[:, n]) for n, head in enumerate(wanted))
            break
        y, _, qk = block.cross_attn(block.cross_attn_ln(x), features)
        found.update(((layer, head), qk[:, head]) for head in wanted)
        x = x + y
        x = x + block.mlp2(fused_gelu(block.mlp1(block.mlp_ln(x))))
    return mx.stack([found[(int(layer), int(head))] for layer, head in heads], axis=1)


def _cross_scores(attention: object, x: mx.array, features: mx.array, wanted: Sequence[int]) -> mx.array:
    """The pre-softmax cross-attention QK of heads ``wanted`` only (their slices of the query and key
    projections): windows × wanted × positions × audio ctx, scaled as ``MultiHeadAttention.qkv_attention``."""
    n_head: int = attention.n_head  # type: ignore[attr-defined]
    state = x.shape[-1]
    size = state // n_head
    scale = size**-0.25
    rows = mx.array(np.concatenate([np.arange(h * size, (h + 1) * size) for h in wanted]))
    query, key = attention.query, attention.key  # type: ignore[attr-defined]
    q = x @ query.weight[rows].T + query.bias[rows]
    k = features @ key.weight[rows].T  # the key projection has no bias
    q = q.reshape(*q.shape[:2], len(wanted), size).transpose(0, 2, 1, 3) * scale
    k = k.reshape(*k.shape[:2], len(wanted), size).transpose(0, 2, 3, 1) * scale
    scores: mx.array = q @ k
    return scores
