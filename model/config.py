"""Frozen configuration dataclasses: the architecture (ModelConfig), decoding (DecodeConfig), training (TrainConfig).

ModelConfig travels inside every checkpoint, so a loaded model is rebuilt exactly; nothing here reads files
or the environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

AttentionKind = Literal["dot", "general", "additive"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the Seq2Seq model; `vocab_size` and the special ids come from the tokenizer."""

    vocab_size: int
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    embed_size: int = 256
    hidden_size: int = 256  # encoder output (both directions together) and decoder state size
    encoder_layers: int = 2
    decoder_layers: int = 1
    attention: AttentionKind = "general"
    copy: bool = True  # pointer-generator (See et al. 2017)
    coverage: bool = False  # coverage vector fed to attention (See et al. 2017)
    self_attention: bool = True  # gated self-matching layer between encoder LSTM layers (R-Net style)
    num_features: int = 2  # token feature vocabulary: 0 = none, 1 = also occurs in the question/passage
    dropout: float = 0.2
    max_source_len: int = 400  # source budget in tokens; longer passages are windowed
    max_history_turns: int = 4  # chat turns kept in the source
    task: Literal["rc", "chat", "any"] = "any"
    # feed the previous attentional state to the decoder LSTM (Luong et al. 2015); False lets training run the
    # decoder LSTM over the whole target in one call
    input_feeding: bool = True
    # adaptive softmax clusters (Grave et al. 2017) instead of the tied output embedding; () = tied. Needs copy off.
    adaptive_cutoffs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.hidden_size % 2:
            raise ValueError("hidden_size must be even: the encoder splits it over two directions")
        if self.attention not in ("dot", "general", "additive"):
            raise ValueError(f"unknown attention {self.attention!r}")
        cutoffs = tuple(int(c) for c in self.adaptive_cutoffs)
        object.__setattr__(self, "adaptive_cutoffs", cutoffs)  # a list from JSON becomes a tuple
        if cutoffs:
            if self.copy:
                raise ValueError(
                    "the adaptive softmax needs copy off: the copy mix needs the whole distribution"
                )
            if list(cutoffs) != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= self.vocab_size:
                raise ValueError("adaptive_cutoffs must increase strictly and stay below vocab_size")
            # each cluster projects to a quarter of the one before
            if self.hidden_size // 4 ** len(cutoffs) < 1:
                raise ValueError(
                    "too many adaptive_cutoffs for hidden_size: the last cluster would have no width"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class DecodeConfig:
    """Beam search settings. beam_size=1 is greedy decoding."""

    beam_size: int = 5
    n_best: int = 1
    max_length: int = 48
    min_length: int = 1
    length_penalty: float = 1.0  # GNMT alpha (Wu et al. 2016); 0 ranks by raw log-prob
    length_normalize: bool = False  # rank by average log-prob per token instead of GNMT
    no_repeat_ngram_size: int = 0  # block repeated n-grams of this size; 0 = off
    max_source_len: int | None = None  # tighter source bound than the model's own; None = model's
    extractive: bool | None = None  # constrain RC answers to passage substrings; None = on for RC
    mmi_weight: float = 0.0  # chat: rerank the whole beam by log p(T|S) - w * log p(T) (Li et al. 2016)
    # chat: also draw this many replies by nucleus sampling and rerank them with the beam
    sample_count: int = 0
    top_p: float = 0.9  # nucleus of those samples (Holtzman et al. 2020)
    top_k: int = 50  # ... taken within the k most likely tokens (Fan et al. 2018); 0 = no limit
    temperature: float = 1.0  # divides the log-probs the samples are drawn from
    # chat reranking: a candidate (beam or sample) whose mean log-prob per token is more than this many nats
    # below the best candidate's is dropped before MMI
    fluency_margin: float = 10.0

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        if not 1 <= self.n_best <= self.beam_size:
            raise ValueError("n_best must be between 1 and beam_size")
        if self.max_length < 1 or self.min_length < 0 or self.min_length > self.max_length:
            raise ValueError("need 0 <= min_length <= max_length and max_length >= 1")
        if self.no_repeat_ngram_size < 0:
            raise ValueError("no_repeat_ngram_size must be >= 0")
        if not 0.0 <= self.mmi_weight < 1.0:
            raise ValueError("mmi_weight must be in [0, 1)")
        if self.sample_count < 0:
            raise ValueError("sample_count must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0.0 < self.temperature <= 10.0:
            raise ValueError("temperature must be in (0, 10]")
        if self.fluency_margin < 0:
            raise ValueError("fluency_margin must be >= 0")

    def replace(self, **changes: Any) -> DecodeConfig:
        return dataclasses.replace(self, **changes)

    def with_request(
        self,
        requested: dict[str, Any] | None,
        *,
        max_beam_size: int = 16,
        max_length: int = 256,
        max_samples: int = 64,
    ) -> DecodeConfig:
        """These defaults overridden by the settings a user asked for (from the UI or the API), bounded.

        Only the REQUESTABLE fields may change; n_best shrinks with a smaller beam. Raises ValueError with a
        readable message for an unknown field or a value out of bounds.
        """
        if not requested:
            return self
        unknown = sorted(set(requested) - REQUESTABLE)
        if unknown:
            raise ValueError(f"unknown decoding setting(s): {', '.join(unknown)}")
        if int(requested.get("beam_size", self.beam_size)) > max_beam_size:
            raise ValueError(f"beam_size must be at most {max_beam_size}")
        if int(requested.get("max_length", self.max_length)) > max_length:
            raise ValueError(f"max_length must be at most {max_length}")
        if int(requested.get("sample_count", self.sample_count)) > max_samples:
            raise ValueError(f"sample_count must be at most {max_samples}")
        changes = {name: type(getattr(self, name))(value) for name, value in requested.items()}
        beam = changes.get("beam_size", self.beam_size)
        changes["n_best"] = min(changes.get("n_best", self.n_best), beam)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


REQUESTABLE = frozenset(
    {
        "beam_size",
        "n_best",
        "max_length",
        "min_length",
        "length_penalty",
        "length_normalize",
        "no_repeat_ngram_size",
        "mmi_weight",
        "sample_count",
        "top_p",
        "top_k",
        "temperature",
        "fluency_margin",
    }
)


@dataclass(frozen=True)
class TrainConfig:
    """Training loop settings; `s2s train` flags map one to one onto these fields."""

    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    max_steps: int = 10_000
    max_minutes: float | None = None
    eval_every: int = 500
    eval_batches: int = 50
    label_smoothing: float = 0.1
    word_dropout: float = (
        0.0  # share of decoder input words replaced by <unk> in training (drop_target_words)
    )
    grad_clip: float = 2.0
    weight_decay: float = 0.0
    coverage_weight: float = 0.0
    seed: int = 1234
    amp: bool = False  # bf16 autocast on CUDA; ignored on CPU
    log_every: int = 50
    num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (ModelConfig overrides, TrainConfig overrides)
    "tiny": (
        dict(
            embed_size=32,
            hidden_size=32,
            encoder_layers=1,
            decoder_layers=1,
            dropout=0.0,
            max_source_len=64,
            self_attention=False,
        ),
        dict(
            batch_size=16,
            learning_rate=5e-3,
            warmup_steps=20,
            max_steps=300,
            eval_every=100,
            eval_batches=5,
            label_smoothing=0.0,
            log_every=20,
        ),
    ),
    "small": (
        dict(
            embed_size=192,
            hidden_size=256,
            encoder_layers=2,
            decoder_layers=1,
            dropout=0.2,
            max_source_len=320,
        ),
        dict(batch_size=32, learning_rate=2e-3, warmup_steps=300, max_steps=20_000, eval_every=1000),
    ),
    # chat trained on a 2-core CPU: no input feeding (teacher forcing in one LSTM call), no copy, an adaptive
    # softmax over an 8k-piece vocabulary; about 7x the training examples/s of "small" (bench/chat_training.py)
    "cpu-chat": (
        dict(
            embed_size=128,
            hidden_size=256,
            encoder_layers=2,
            decoder_layers=1,
            dropout=0.2,
            max_source_len=96,
            self_attention=False,
            copy=False,
            input_feeding=False,
            adaptive_cutoffs=(1000, 4000),
            task="chat",
        ),
        dict(
            batch_size=64,
            learning_rate=2e-3,
            warmup_steps=300,
            max_steps=20_000,
            eval_every=500,
            label_smoothing=0.0,
        ),
    ),
    "base": (
        dict(
            embed_size=256,
            hidden_size=512,
            encoder_layers=3,
            decoder_layers=1,
            dropout=0.25,
            max_source_len=400,
        ),
        dict(batch_size=64, learning_rate=2e-3, warmup_steps=500, max_steps=60_000, eval_every=2000),
    ),
}
