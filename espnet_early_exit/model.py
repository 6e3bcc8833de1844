"""The early-exit ASR model `ee_espnet`: ESPnet's CTC/attention model with an exit at several
encoder blocks, each with its own (or a shared) CTC head and optional attention decoder.

Loss (the paper's unweighted sum, with optional weights w_k):

    L = sum_k w_k * (ctc_weight * CTC_k + (1 - ctc_weight) * Att_k)

where exits without a decoder contribute w_k * CTC_k. `model.ctc` and `model.decoder` are the
last exit's, so ESPnet's stock inference decodes such a model at full depth unchanged.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import editdistance
import torch
import torch.utils.checkpoint
from typeguard import typechecked

from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.legacy.nets.pytorch_backend.nets_utils import th_accuracy
from espnet2.legacy.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos
from espnet2.torch_utils.device_funcs import force_gatherable

from espnet_early_exit.encoders.exits import EncoderState, MultiExitEncoder

EXIT_DECODER_MODES = ("per_exit", "shared", "last")
EXIT_HEAD_MEMORY_MODES = ("keep", "eager", "recompute")


class LowRankProjection(torch.nn.Sequential):
    """D -> rank -> vocab: a factorised output layer (Sainath et al., ICASSP 2013) for an
    exit's CTC head; (D + vocab) * rank weights instead of D * vocab."""

    def __init__(self, in_features: int, rank: int, out_features: int):
        super().__init__(
            torch.nn.Linear(in_features, rank, bias=False),
            torch.nn.Linear(rank, out_features),
        )
        self.in_features, self.rank, self.out_features = in_features, rank, out_features


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


class _EagerGradLoss(torch.autograd.Function):
    """A scalar loss whose gradients (w.r.t. its input and the parameters) are computed in the
    forward pass; backward only scales them by the incoming gradient. Exact, because the
    training loss is linear in this loss, and nothing of size (B, T, vocab) is kept.

    apply(loss_and_grads, n_params, x, *params, *args), where
    loss_and_grads(x, params, *args) -> (scalar loss, gradients w.r.t. [x] + params).
    """

    @staticmethod
    def forward(ctx, loss_and_grads, n_params, x, *rest):
        params, args = list(rest[:n_params]), rest[n_params:]
        # the inner graph lives only in here: identity hooks keep any saved-tensor hooks of the
        # caller (offloading, memory accounting) away from it
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_same, _same):
            x_in = x.detach().requires_grad_(True)
            loss, grads = loss_and_grads(x_in, params, *args)
        ctx.has_grad = [g is not None for g in grads]
        ctx.n_args = len(args)
        ctx.save_for_backward(*[g for g in grads if g is not None])
        return loss.detach()

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_out if has else None for has in ctx.has_grad]
        return (None, None) + tuple(grads) + (None,) * ctx.n_args


def _autograd_loss_and_grads(head: CTC, x, params, *args):
    """Any CTC head: its loss, and autograd's gradients of it."""
    loss = head(x, *args)
    if loss.dim() != 0:
        raise ValueError("exit_head_memory: eager needs a scalar CTC loss (ctc_conf reduce: true)")
    # seed 1, not a loss scale: under float16 autocast the head is one layer from its loss, so
    # its gradients do not underflow, while a large seed could overflow the float16 weight
    # gradient (a sum over every frame of the batch); the grad scaler's factor arrives in
    # backward and multiplies the float32 results
    return loss, torch.autograd.grad(loss, [x] + params, allow_unused=True)


def _fusable(head: CTC) -> bool:
    return (isinstance(head, CTC) and head.ctc_type == "builtin" and head.reduce
            and bool(getattr(head.ctc_loss, "zero_infinity", False)))


def _label_classes(ys_pad: torch.Tensor, ys_lens: torch.Tensor, device: torch.device):
    """Each utterance's CTC classes, blank (0) then its distinct labels: (class ids (B, C),
    which are real (B, C), targets as indices into them (all utterances concatenated)).
    The same for every exit of a batch."""
    uniq, targets = [], []
    for b in range(ys_pad.size(0)):
        u, inv = torch.unique(ys_pad[b, : int(ys_lens[b])], return_inverse=True)
        uniq.append(u)
        targets.append(inv + 1)
    n_cls = 1 + max(len(u) for u in uniq)
    cls = torch.zeros(len(uniq), n_cls, dtype=torch.long, device=device)
    valid = torch.zeros(len(uniq), n_cls, dtype=torch.bool, device=device)
    valid[:, 0] = True
    for b, u in enumerate(uniq):
        cls[b, 1 : 1 + len(u)] = u
        valid[b, 1 : 1 + len(u)] = True
    return cls, valid, torch.cat(targets).to(device)


def _builtin_ctc_loss_and_grads(head: CTC, x, params, hlens, ys_pad, ys_lens, classes=None):
    """ESPnet's builtin CTC loss (summed over utterances, divided by the batch size, infinite
    losses zeroed) and its exact gradients, with the gradient w.r.t. the logits formed
    directly as softmax - occupancy. The alpha-beta recursion only needs the log-posteriors of
    blank and of each utterance's own labels, so torch's CTC runs on those few columns, and the
    (B, T, vocab) logits are read twice (log-sum-exp, softmax) instead of going through
    log_softmax, the CTC backward and the log_softmax backward. Tested against `head(...)`.
    classes: `_label_classes(ys_pad, ys_lens, ...)`, when the caller already has them.
    """
    logits = head.ctc_lo(torch.nn.functional.dropout(x, p=head.dropout_rate))
    B, T, _ = logits.shape
    dev = logits.device
    hlens, ys_lens = hlens.to(dev).long(), ys_lens.to(dev).long()
    with torch.no_grad():
        z = logits.detach().float()
        lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (B, T, 1)
        cls, valid, targets = classes or _label_classes(ys_pad, ys_lens, dev)
        where = cls[:, None, :].expand(B, T, cls.size(1))
        lp = (z.gather(-1, where) - lse).masked_fill(~valid[:, None, :], float("-inf"))
    lp_t = lp.transpose(0, 1).contiguous().requires_grad_(True)  # (T, B, classes)
    with torch.enable_grad():
        nll = torch.nn.functional.ctc_loss(
            lp_t, targets, hlens, ys_lens, blank=0, reduction="none",
            zero_infinity=False,  # infeasible utterances are found and zeroed below
        )
        (g_lp,) = torch.autograd.grad(nll.sum(), lp_t)
    with torch.no_grad():
        # torch's CTC gradient w.r.t. its input is exp(lp) - occupancy (the form that is
        # correct after log_softmax): recover the occupancy of each class
        frames = torch.arange(T, device=dev)[None, :] < hlens[:, None]  # (B, T)
        ok = torch.isfinite(nll)
        live = frames & ok[:, None]
        occupancy = (lp_t.detach().exp() - g_lp).transpose(0, 1)
        occupancy = torch.where(live[..., None] & valid[:, None, :], occupancy, 0.0)
        g = (z - lse).exp_()  # softmax
        g.mul_(live[..., None])
        g.scatter_add_(-1, where, -occupancy)
        g.div_(B)
        loss = torch.where(ok, nll, torch.zeros_like(nll)).sum() / B
    grads = torch.autograd.grad(logits, [x] + params, g.to(logits.dtype), allow_unused=True)
    return loss.to(x.dtype), grads


def _fresh_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy with freshly initialised parameters (so exits do not start identical)."""
    clone = copy.deepcopy(module)
    for m in clone.modules():
        if m is not clone and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return clone


class EarlyExitASRModel(ESPnetASRModel):
    """ESPnet ASR model with exits.

    Args (besides ESPnetASRModel's, which `model_conf` passes through):
        share_exit_heads: one CTC head for every exit (the authors' wav2vec2 code) instead of
            one per exit (their Conformer code).
        exit_decoders: where attention decoders sit when ctc_weight < 1: "per_exit" (the
            paper's AED variant), "shared" (one decoder used at every exit) or "last".
        exit_weights: w_k per exit (default all 1.0).
        exit_head_rank: if set, the earlier exits' CTC heads are factorised, D -> rank ->
            vocab (`LowRankProjection`), instead of a full D x vocab layer; the last exit keeps
            ESPnet's full head. With BPE 5000 and D 256 a full head is 2.9% of a 12-block
            Conformer's training FLOPs per exit, a rank-64 head 0.8%.
        exit_head_memory: what the earlier exits' CTC heads keep for the backward pass:
            "keep" (autograd's usual (B, T, vocab) log-posteriors), "eager" (their gradients
            are computed in the forward pass, exactly, and only those are kept: (B, T, D) and
            the head's weights; no extra compute) or "recompute" (torch.utils.checkpoint:
            one extra head forward per exit).
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        token_list: Union[Tuple[str, ...], List[str]],
        frontend: Optional[AbsFrontend],
        specaug: Optional[AbsSpecAug],
        normalize: Optional[AbsNormalize],
        preencoder: Optional[AbsPreEncoder],
        encoder: AbsEncoder,
        postencoder: Optional[AbsPostEncoder],
        decoder: Optional[AbsDecoder],
        ctc: CTC,
        joint_network: Optional[torch.nn.Module] = None,
        share_exit_heads: bool = False,
        exit_decoders: str = "per_exit",
        exit_weights: Optional[List[float]] = None,
        exit_head_rank: Optional[int] = None,
        exit_head_memory: str = "keep",
        ctc_weight: float = 0.5,
        **espnet_model_conf,
    ):
        if not isinstance(encoder, MultiExitEncoder):
            raise ValueError(
                f"encoder: model ee_espnet needs an early-exit encoder (ee_conformer, "
                f"ee_transformer, ee_e_branchformer, ee_hf_ssl), got "
                f"{type(encoder).__name__}"
            )
        if postencoder is not None:
            raise ValueError("postencoder: not supported by ee_espnet (exits end the encoder)")
        if joint_network is not None:
            raise ValueError("decoder: transducer decoders are not supported by ee_espnet")
        if not 0.0 < ctc_weight <= 1.0:
            raise ValueError(
                f"model_conf.ctc_weight: {ctc_weight} must be in (0, 1]: every exit has a "
                "CTC head (exit policies read its posteriors)"
            )
        if exit_head_memory not in EXIT_HEAD_MEMORY_MODES:
            raise ValueError(
                f"model_conf.exit_head_memory: {exit_head_memory!r} is not one of "
                f"{', '.join(EXIT_HEAD_MEMORY_MODES)}"
            )
        if exit_head_rank is not None:
            if share_exit_heads:
                raise ValueError(
                    "model_conf.exit_head_rank: needs per-exit heads (share_exit_heads: false): "
                    "the shared head is the last exit's full head"
                )
            if int(exit_head_rank) < 1:
                raise ValueError(f"model_conf.exit_head_rank: {exit_head_rank} is not a rank >= 1")
        if exit_decoders not in EXIT_DECODER_MODES:
            raise ValueError(
                f"model_conf.exit_decoders: {exit_decoders!r} is not one of "
                f"{', '.join(EXIT_DECODER_MODES)}"
            )
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=None,
            decoder=decoder,
            ctc=ctc,
            joint_network=None,
            ctc_weight=ctc_weight,
            **espnet_model_conf,
        )
        self.exit_layers: List[int] = list(encoder.exit_layers)
        self.exit_weights = self._check_weights(exit_weights)
        self.share_exit_heads = share_exit_heads
        self.exit_head_rank = exit_head_rank
        self.exit_head_memory = exit_head_memory
        self.exit_decoder_mode = exit_decoders

        # heads of the exits before the last (the last exit uses self.ctc / self.decoder)
        self.exit_ctc_heads = torch.nn.ModuleDict()
        if not share_exit_heads:
            for k in self.exit_layers[:-1]:
                head = _fresh_copy(self.ctc)
                if exit_head_rank is not None:
                    full = self.ctc.ctc_lo
                    head.ctc_lo = LowRankProjection(
                        full.in_features, int(exit_head_rank), full.out_features
                    )
                self.exit_ctc_heads[str(k)] = head
        self.exit_att_decoders = torch.nn.ModuleDict()
        if self.decoder is not None and exit_decoders == "per_exit":
            for k in self.exit_layers[:-1]:
                self.exit_att_decoders[str(k)] = _fresh_copy(self.decoder)
        logging.info(
            f"ee_espnet: exits {self.exit_layers}, weights {self.exit_weights}, "
            f"{'shared' if share_exit_heads else 'per-exit'} CTC heads"
            f"{f' (earlier exits rank {exit_head_rank})' if exit_head_rank else ''}, decoders: "
            f"{exit_decoders if self.decoder is not None else 'none'}"
        )

    def _check_weights(self, exit_weights: Optional[Sequence[float]]) -> List[float]:
        n = len(self.exit_layers)
        if exit_weights is None:
            return [1.0] * n
        weights = [float(w) for w in exit_weights]
        if len(weights) != n:
            raise ValueError(
                f"model_conf.exit_weights: {len(weights)} values for {n} exits "
                f"{self.exit_layers}"
            )
        for w in weights:
            if w < 0 or w != w:
                raise ValueError(f"model_conf.exit_weights: {w} is not a weight >= 0")
        if sum(weights) == 0:
            raise ValueError("model_conf.exit_weights: all weights are 0")
        return weights

    def unused_parameter_reasons(self) -> List[str]:
        """Why a training step may leave trainable parameters without a gradient, which makes
        DistributedDataParallel need ``find_unused_parameters`` (ESPnet's
        ``--unused_parameters``); [] if every parameter gets one on every step. Every exit's
        head and decoder is used on every step (the eager heads too: their gradients reach
        the parameters in backward, where DDP's hooks all-reduce them)."""
        reasons = getattr(self.encoder, "unused_parameter_reasons", list)()
        return [r for r in reasons if r]

    # -------------------------------------------------------------- heads
    def _check_exit(self, k: int) -> None:
        if k not in self.exit_layers:
            raise ValueError(f"exit {k} is not one of the model's exits {self.exit_layers}")

    def ctc_at(self, k: int) -> CTC:
        """The CTC head of exit k."""
        self._check_exit(k)
        return self.exit_ctc_heads[str(k)] if str(k) in self.exit_ctc_heads else self.ctc

    def decoder_at(self, k: int) -> Optional[AbsDecoder]:
        """The attention decoder of exit k (None if that exit has none)."""
        self._check_exit(k)
        if self.decoder is None:
            return None
        if str(k) in self.exit_att_decoders:
            return self.exit_att_decoders[str(k)]
        if self.exit_decoder_mode == "last" and k != self.exit_layers[-1]:
            return None
        return self.decoder

    # ------------------------------------------------------------ encoding
    def _features(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Front-end, SpecAugment (training only), normalisation, pre-encoder."""
        feats, feats_lengths = self._extract_feats(speech, speech_lengths)
        if self.specaug is not None and self.training:
            feats, feats_lengths = self.specaug(feats, feats_lengths)
        if self.normalize is not None:
            feats, feats_lengths = self.normalize(feats, feats_lengths)
        if self.preencoder is not None:
            feats, feats_lengths = self.preencoder(feats, feats_lengths)
        return feats, feats_lengths

    def encode(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The last exit only, as a single-exit model: (encoder_out (B, T', D), olens).

        ESPnet's callers of ``encode`` (stock ``Speech2Text`` and its CLI, CTC segmentation,
        ...) decode what it returns with ``model.ctc`` / ``model.decoder``, the last exit's
        heads, and would decode intermediate outputs with ``model.ctc`` too (interCTC style),
        which is wrong for exits with their own heads: so no earlier exit is returned here.
        Every exit: `encode_exits`; decoding at an exit with its heads: EarlyExitSpeech2Text.
        """
        state = self.encode_begin(speech, speech_lengths)
        _, out, olens = self.encode_to(state, self.exit_layers[-1])
        return out, olens

    def encode_exits(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        up_to: Optional[int] = None,
    ) -> Tuple[List[Tuple[int, torch.Tensor]], torch.Tensor]:
        """Encoder outputs at every exit up to `up_to`: ([(k, (B, T', D)), ...], olens)."""
        feats, feats_lengths = self._features(speech, speech_lengths)
        return self.encoder.forward_exits(feats, feats_lengths, up_to)

    def encode_begin(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> EncoderState:
        """Front-end and subsampling only; continue with `encode_to`."""
        feats, feats_lengths = self._features(speech, speech_lengths)
        return self.encoder.begin(feats, feats_lengths)

    def encode_to(
        self, state: EncoderState, k: int
    ) -> Tuple[EncoderState, torch.Tensor, torch.Tensor]:
        """Run the blocks after `state` up to exit k (none after it): (state, out, olens)."""
        self._check_exit(k)
        state = self.encoder.advance(state, k)
        return state, self.encoder.exit_output(state), state.lengths

    # ------------------------------------------------------------- training
    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Early-exit loss over all exits; stats per exit (see the module docstring)."""
        batch_size = speech.shape[0]
        text[text == -1] = self.ignore_id
        text = text[:, : text_lengths.max()]

        exits, olens = self.encode_exits(speech, speech_lengths)
        stats: Dict[str, Optional[torch.Tensor]] = {}
        loss = 0.0
        loss_ctc_total = 0.0
        loss_att_total = None
        classes = None  # the fused eager CTC's label classes, the same at every exit
        for weight, (k, out) in zip(self.exit_weights, exits):
            head = self.ctc_at(k)
            mode = self.exit_head_memory if k != self.exit_layers[-1] else "keep"
            if mode == "eager" and self.training and torch.is_grad_enabled():
                params = [p for p in head.parameters() if p.requires_grad]
                if _fusable(head):
                    classes = classes or _label_classes(text, text_lengths, out.device)
                    impl = functools.partial(_builtin_ctc_loss_and_grads, head, classes=classes)
                else:
                    impl = functools.partial(_autograd_loss_and_grads, head)
                loss_ctc = _EagerGradLoss.apply(
                    impl, len(params), out, *params, olens, text, text_lengths
                )
            elif mode == "recompute" and self.training and torch.is_grad_enabled():
                loss_ctc = torch.utils.checkpoint.checkpoint(
                    head, out, olens, text, text_lengths, use_reentrant=False
                )
            else:
                loss_ctc = head(out, olens, text, text_lengths)
            stats[f"loss_ctc_exit{k}"] = loss_ctc.detach()
            if not self.training:
                cer, wer = self._ctc_error_rates(self.ctc_at(k), out, olens, text)
                stats[f"cer_ctc_exit{k}"] = cer
                stats[f"wer_ctc_exit{k}"] = wer
            loss_exit = loss_ctc
            decoder = self.decoder_at(k)
            if decoder is not None and self.ctc_weight < 1.0:
                loss_att, acc = self._exit_att_loss(decoder, out, olens, text, text_lengths)
                stats[f"loss_att_exit{k}"] = loss_att.detach()
                stats[f"acc_exit{k}"] = acc
                loss_exit = self.ctc_weight * loss_ctc + (1 - self.ctc_weight) * loss_att
                loss_att_total = (loss_att_total or 0.0) + weight * loss_att.detach()
                stats["acc"] = acc  # the deepest exit's, for ESPnet's "valid acc" criteria
            loss_ctc_total = loss_ctc_total + weight * loss_ctc.detach()
            loss = loss + weight * loss_exit

        k_last = self.exit_layers[-1]
        stats["loss_ctc"] = loss_ctc_total
        if loss_att_total is not None:
            stats["loss_att"] = loss_att_total
        stats["cer_ctc"] = stats.get(f"cer_ctc_exit{k_last}")
        stats["wer_ctc"] = stats.get(f"wer_ctc_exit{k_last}")
        stats["loss"] = loss.detach()
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight

    def _exit_att_loss(
        self,
        decoder: AbsDecoder,
        encoder_out: torch.Tensor,
        encoder_out_lens: torch.Tensor,
        ys_pad: torch.Tensor,
        ys_pad_lens: torch.Tensor,
    ) -> Tuple[torch.Tensor, float]:
        ys_in_pad, ys_out_pad = add_sos_eos(ys_pad, self.sos, self.eos, self.ignore_id)
        decoder_out, _ = decoder(encoder_out, encoder_out_lens, ys_in_pad, ys_pad_lens + 1)
        loss_att = self.criterion_att(decoder_out, ys_out_pad)
        acc = th_accuracy(
            decoder_out.view(-1, self.vocab_size), ys_out_pad, ignore_label=self.ignore_id
        )
        return loss_att, acc

    def _ctc_error_rates(
        self,
        head: CTC,
        encoder_out: torch.Tensor,
        encoder_out_lens: torch.Tensor,
        ys_pad: torch.Tensor,
    ) -> Tuple[float, float]:
        """Greedy-CTC CER and WER (fractions) of a batch, ESPnet's ErrorCalculator style."""
        ys_hat = head.argmax(encoder_out).cpu()
        char_err = char_len = word_err = word_len = 0
        for b in range(ys_hat.size(0)):
            hyp_ids = torch.unique_consecutive(ys_hat[b, : int(encoder_out_lens[b])])
            hyp_ids = [int(i) for i in hyp_ids if int(i) != self.blank_id]
            ref_ids = [int(i) for i in ys_pad[b] if int(i) != self.ignore_id]
            hyp, ref = self._ids_to_text(hyp_ids), self._ids_to_text(ref_ids)
            char_err += editdistance.eval(hyp.replace(" ", ""), ref.replace(" ", ""))
            char_len += len(ref.replace(" ", ""))
            word_err += editdistance.eval(hyp.split(), ref.split())
            word_len += len(ref.split())
        return char_err / max(char_len, 1), word_err / max(word_len, 1)

    def _ids_to_text(self, ids: Sequence[int]) -> str:
        skip = {self.blank_id, self.sos, self.eos}
        pieces = [self.token_list[i] for i in ids if i not in skip]
        return "".join(pieces).replace("<space>", " ").replace("\u2581", " ").strip()
