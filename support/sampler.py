"""
The sampler: draws the attempts of every episode, and records the log-prob of each token it drew.

    sampler = Sampler(policy)     # once, after loading the policy (stage1.main, stage2.main)
    responses, truncated, logps = sampler.sample(prompts, max_new_tokens=512, temperature=1.0,
                                                 end_ids=end_ids, pad_id=pad_id)

rollout.run_episodes calls it for training, evaluation (greedy, --turns, --budgets, --repair) and
baselines.py alike; given no sampler it makes one for the call.

Why its own file: the rest of the project is the algorithm; this is the one place that is about the
hardware, and it reads top to bottom as one short decode loop. nanochat keeps its `engine.py` (a KV
cache and a decode loop) beside its model for the same reason; nano-vllm shows the same pieces, a
preallocated KV cache and a decode step captured as a CUDA graph, at production strength.

What it does, and why (the numbers are the comments' in Sampler):
1. Weights in the compute dtype. On a GPU the policy keeps fp32 master weights (Adam's 5e-6 steps
   vanish in bf16, model.load_model) and trains under bf16 autocast; decoding from it under autocast
   re-casts every weight at every step and keeps an fp32 KV cache. So the sampler decodes with a
   bf16 COPY of the policy. Chosen over bf16 parameters with fp32 master weights kept by the
   optimizer because the policy, its checkpoints and token_logprobs stay exactly as they were; the
   cost is one bf16 copy of the weights (3 GB at 1.5B). The copy is refreshed in place (`copy_`) at
   the start of every sample() call, so it can never be stale, whatever happened to the policy since
   (an optimizer step, a resumed checkpoint): ~9 GB of copying at 1.5B, milliseconds on a GPU, against
   seconds of decoding. In place means the same tensors at the same addresses, so a captured CUDA
   graph stays valid. Where the model already is in the compute dtype (fp32 on a CPU, a bf16
   evaluation model) the sampler decodes with the model itself: no copy. A CPU never gets the copy, even
   where the trainer computes under bf16 autocast (model.use_bf16): a bf16 copy makes every op bf16,
   and on a 2-core AMX Xeon 64 prompts x 16 new tokens decoded in 12.7 s from it against 7.7 s from
   fp32 weights (a CPU without native bf16 runs bf16 ~50x slower than fp32). What pays on a CPU with
   native bf16 is the trainer's own numerics: autocast=True runs the prefill and every decode step
   under bf16 autocast over the fp32 weights (bf16 matmuls, fp32 norms and softmax), with a bf16 KV
   cache (autocast's attention casts keys and values to bf16 anyway). The stages pass it wherever the
   trainer runs under bf16. One autocast context spans a whole batch, prefill to last token:
   autocast keeps the bf16 cast of each fp32 weight until its outermost context exits, so every
   weight is cast once a batch, not once a step (the same tokens and log-probs, bit for bit).
   bench.py --preset smol_cpu's rollout (two attempts of 32 random prompts, 16 new tokens each,
   SmolLM2-135M, 2-core AVX512-BF16 EPYC): 4.6 s so, 11.9 s in fp32, 6.4-7.2 s with a context per
   step (half of it casting). The mismatch left is measured and corrected like a GPU's (reinforce.py).
2. No `generate`: it fills every field we leave unset from the model's own generation_config (a hub
   model shipping top_k, min_p or no_repeat_ngram_size would silently change on-policy sampling and
   the evaluation), and it syncs with the host every step. Here the only settings are SCoRe's:
   greedy or sampling, temperature, max new tokens, end and pad ids.
3. A static KV cache of fixed length per call (prompt width + max_new_tokens), transformers'
   StaticCache with full-length layers only (static_cache): written in place, never re-concatenated,
   in the decoding model's dtype (bf16 on a GPU), or in bf16 under autocast=True (1.).
4. One forward over the whole left-padded prompt, then one token per step.
5. The log-prob of each drawn token, from this step's (B, V) row only (never a [B, T, V] buffer,
   never output_scores): log_softmax of the logits at temperature 1, the quantity the trainer's
   token_logprobs computes, so the two compare token by token (the importance weight in
   reinforce.reinforce_update). Sharp edge: on a GPU those logits come out of a bf16 matmul, which is part
   of the sampler/trainer mismatch that the weight corrects and bench.py measures. At a temperature
   other than 1 the recorded log-prob is still the temperature-1 one: the change of distribution is
   deliberate and the weight must not undo it (Stage I and II sample at 1.0).
6. `done` flags stay on the device; the host looks at them every `check_every` steps only, so the
   GPU is not stalled once per token.
7. Opt-in, not yet measured on a GPU:
   compile=True compiles the decode step with torch.compile, mode="reduce-overhead" on CUDA (CUDA
   graphs: the ~1,300 kernel launches of a step replayed as one), and routes the decode step's
   attention through `decode_attention`, grouped-query attention without copying K/V (a model that
   soft-caps attention scores, Gemma-2, keeps eager attention: use_decode_attention). On a CPU,
   compile=True uses inductor without graphs (tests/test_sampler.py: same tokens as eager). The
   default is plain eager, the path that has run.
"""

import copy

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from model import soft_caps_attention


# ----------------------------------------------------------------------------- attention without K/V copies

def decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Grouped-query attention for one new token, without repeating K/V.
    Qwen2.5-1.5B has 12 query heads and 2 KV heads. Stock SDPA under torch.compile (or with a mask on
    some paths) repeats each KV head 6 times: the whole cache copied 6x per layer per step. Instead,
    fold the 6 query heads of a group into the "query length" axis: query (B, 12, 1, D) is viewed as
    (B, 2, 6, D), one row per head of the group, all at the same position, so the (B, 1, 1, L) padding
    mask broadcasts over them unchanged. Prefill (many query tokens) goes to the stock function.
    SDPA takes no transform of the scores, so a soft-capped model (Gemma-2) cannot come here: see
    use_decode_attention."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    if kwargs.get("softcap"):
        raise ValueError("decode_attention cannot soft-cap attention scores; a soft-capped model keeps its eager "
                         "attention (support.sampler.use_decode_attention)")
    B, n_heads, q_len, D = query.shape
    n_kv = key.shape[1]
    if q_len != 1 or n_heads == n_kv:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    q = query.reshape(B, n_kv, n_heads // n_kv, D)  # head h = group g * n_rep + r, as repeat_kv orders them
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)  # (B, n_kv, n_rep, D)
    return out.reshape(B, 1, n_heads, D), None  # (B, q_len = 1, heads, D), the layout attention layers expect


def use_decode_attention(model):
    """Switch `model` to decode_attention (registered with transformers under the name 'score_decode'),
    or, for a model that soft-caps its attention scores (Gemma-2), to eager attention, the one stock
    attention that applies the cap (SDPA refuses or drops it, model.soft_caps_attention).
    Why not apply the cap inside decode_attention: SDPA kernels take no transform of the scores, so a
    soft-capping decode_attention would be a hand-written eager attention, a second copy of Gemma-2's
    own to keep right. The model's eager attention is that code, and torch.compile fuses it as well;
    what it costs is the K/V copies decode_attention avoids (2x at Gemma-2-2B: 8 query heads, 4 KV heads)."""
    if soft_caps_attention(model.config):
        model.set_attn_implementation("eager")
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register("score_decode", decode_attention)
    AttentionMaskInterface.register("score_decode", sdpa_mask)  # the masks SDPA takes
    model.set_attn_implementation("score_decode")


# ----------------------------------------------------------------------------- the sampler

def static_cache(config, length, dtype=None):
    """transformers' StaticCache of `length` positions, with a full-length layer where the model has a
    sliding-window one (Mistral-v0.1, Phi-3, Gemma-2's local layers); the window is then the mask's job
    (transformers builds those layers' masks from config.sliding_window whatever the cache holds).
    Why: a sliding layer keeps how full it is as a Python int and branches on it, so torch.compile
    guards on that int and recompiles at every decode step (past 8 it gives up and runs eagerly).
    What it costs: those layers keep every position instead of the last `window` ones, nothing while
    prompt + response fit in the window (4096 for Mistral-v0.1 and Gemma-2, 2047 for Phi-3-mini-4k).
    dtype: store keys and values in it, whatever dtype the forward computes them in (under bf16
    autocast Llama's keys come out fp32 after RoPE and its values bf16; its attention takes both in bf16)."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    class StoredAs(StaticLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(key_states.to(dtype), value_states.to(dtype), *args, **kwargs)

    cache = StaticCache(config=config, max_cache_len=length)
    if dtype is not None:
        cache.layers = [StoredAs(max_cache_len=length) for _ in cache.layers]
    else:
        cache.layers = [StaticLayer(max_cache_len=length) if layer.is_sliding else layer for layer in cache.layers]
    return cache


def pick_tokens(logits, temperature):
    """(B, V) logits of this step -> (token ids (B,), log pi(token) at temperature 1 (B,)). Greedy at 0.
    Plain sampling from softmax(logits / temperature): no top-k, top-p, min-p or penalties, because
    on-policy RL trains on log pi(y), so y must be drawn from pi itself."""
    logits = logits.float()  # sample in fp32 whatever the model's dtype
    if temperature > 0:
        # argmax of p / E with E ~ Exponential(1) draws exactly from p (the exponential race), without
        # torch.multinomial's host sync on CUDA (gpt-fast's multinomial_sample_one_no_sync).
        probs = (logits / temperature).softmax(-1)  # (B, V)
        tokens = (probs / torch.empty_like(probs).exponential_(1)).argmax(-1)  # (B,)
    else:
        tokens = logits.argmax(-1)
    logp = logits.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)  # (B,): one (B, V) row, then dropped
    return tokens, logp


class Sampler:
    """Samples from `model` (the policy, or a model being evaluated); see the module docstring."""

    def __init__(self, model, *, dtype=None, compile=False, check_every=16, copy_to=None, autocast=False):
        self.source, self.check_every, self.compile = model, check_every, compile
        param = next(model.parameters())
        self.device = torch.device(copy_to) if copy_to is not None else param.device
        # 1. The decoding model. dtype None: bf16 for an fp32 model on a GPU, else the model's own.
        # A dtype other than the model's, compile=True (which switches the attention, and the trainer's
        # must stay stock) or copy_to (a policy about to be sharded, support/sharding.py: a whole copy on
        # that device) decodes with a copy; otherwise with the model itself.
        # (dtype=torch.bfloat16 on a CPU runs the GPU's copy-and-refresh path; the tests use it.)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" and param.dtype == torch.float32 else param.dtype
        if dtype != param.dtype or compile or copy_to is not None:
            self.model = copy.deepcopy(model).eval().requires_grad_(False)
            for p in self.model.parameters():  # parameters only: buffers like RoPE's inv_freq stay fp32
                p.data = p.data.to(self.device, dtype)
            self.model.to(self.device)  # the buffers
        else:
            self.model = model
        # 1. (end) autocast: an fp32 decoding model computes under bf16 autocast, into a bf16 cache.
        self.autocast = autocast and dtype == torch.float32
        self.cache_dtype = torch.bfloat16 if self.autocast else None  # None: the model's own
        if compile:
            use_decode_attention(self.model)
            mode = "reduce-overhead" if self.device.type == "cuda" else None  # CUDA graphs only on CUDA
            self.decode_step = torch.compile(self.model.forward, mode=mode, dynamic=False)
        else:
            self.decode_step = self.model.forward
        self.caches = {}  # compile=True: batch size -> (cache, length), reused: compiled graphs see the same tensors

    def numerics(self):
        """bf16 autocast when the sampler was made with autocast=True (1.), else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    @torch.no_grad()
    def refresh(self):
        """Copy the model's current weights into the decoding copy, in place (a no-op without a copy).
        sample() calls it first, every time (1. in the module docstring)."""
        if self.model is not self.source:
            for dst, src in zip(self.model.parameters(), self.source.parameters()):
                if isinstance(src, DTensor):  # a sharded policy (--shard true): gather the whole weight
                    src = src.full_tensor()
                dst.copy_(src)  # casts fp32 -> bf16; same storage, so captured graphs still read it

    def new_cache(self, batch, length):
        """A StaticCache for `batch` rows of at least `length` positions, and its length. The mask is sized
        from the length returned here (with compile=True, longer than asked), never from a cache layer."""
        if not self.compile:
            return static_cache(self.model.config, length, self.cache_dtype), length
        # Few distinct shapes: each compiles (and captures a graph) once, and torch.compile falls back
        # to eager past 8 recompiles (torch._dynamo.config.cache_size_limit). So the length is rounded up
        # to a multiple of 256, and each batch size keeps ONE cache, as long as the longest call so far:
        # a shorter call reuses it, a longer one replaces it. One cache per shape met instead would keep
        # 2-3 GB per shape at 1.5B (64 rows x 1,536 positions), and a MATH run meets 5-7 shapes; here a
        # run keeps one or two (its full batches and its last, smaller one). The price: every decode
        # step reads the whole cache, unused columns too, so attempt 1 reads as many as attempt 2's
        # length (at 1.5B and 64 rows, ~1.8 MB per column against 3 GB of weights per step).
        length = -(-length // 256) * 256
        if batch not in self.caches or self.caches[batch][1] < length:
            self.caches.pop(batch, None)  # let the old tensors go before the new ones are allocated
            self.caches[batch] = static_cache(self.model.config, length, self.cache_dtype), length
        cache, length = self.caches[batch]
        cache.reset()  # zeroes the tensors in place and rewinds the write position
        return cache, length

    @torch.no_grad()
    def sample(self, prompts, *, max_new_tokens, temperature, end_ids, pad_id, batch_size=64):
        """One response per prompt (lists of token ids). Returns (responses, truncated, logprobs):
        each response runs up to and including its first end-of-turn token; truncated[i] is True when
        it hit max_new_tokens without one; logprobs[i][j] = log pi_sampler(responses[i][j]) at
        temperature 1 (see 5.). temperature 0 means greedy."""
        self.refresh()
        model, device = self.model, self.device
        was_training = model.training
        model.eval()
        end = torch.tensor(list(end_ids), device=device)
        # Similar lengths in one batch mean less padding; the order is restored at the end.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        responses, truncated, logprobs = [None] * len(prompts), [None] * len(prompts), [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            B, width = len(idx), max(len(prompts[i]) for i in idx)
            # Left padding: every row's last prompt token sits at the same column, so new tokens line up.
            input_ids = torch.tensor([[pad_id] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
            # 3. The cache and its mask cover the prompt and every new token. Columns not yet written
            # are 1 here but hidden by causality (query position < their position): one mask, all steps.
            cache, length = self.new_cache(B, width + max_new_tokens)
            mask = torch.ones(B, length, dtype=torch.long, device=device)  # every position, whatever the window
            mask[:, :width] = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx],
                                           device=device)
            # Position ids count real tokens only, as token_logprobs makes them, so a left-padded row
            # gets the positions it gets when it is trained on.
            positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)  # (B, width)
            tokens = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
            logps = torch.zeros(B, max_new_tokens, device=device)
            done = torch.zeros(B, dtype=torch.bool, device=device)
            steps = 0
            with self.numerics():  # 1.: one context for the batch, so each weight is cast to bf16 once
                # 4. prefill: the whole prompt in one eager forward; only the last position's logits.
                logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                               past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
                position = positions[:, -1:]  # (B, 1)
                for t in range(max_new_tokens):
                    # 5. draw this step's token and keep its log-prob (B,), then forget the (B, V) row.
                    token, logp = pick_tokens(logits, temperature)
                    tokens[:, t], logps[:, t] = token, logp
                    done |= torch.isin(token, end)
                    steps = t + 1
                    # 6. the only host sync: every check_every steps, stop once every row has ended.
                    if steps == max_new_tokens or (steps % self.check_every == 0 and bool(done.all())):
                        break
                    position = position + 1
                    # 7. one decode step (compiled and graph-replayed with compile=True on CUDA).
                    if self.compile and device.type == "cuda":
                        torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are consumed
                    logits = self.decode_step(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                                              past_key_values=cache, use_cache=True).logits[:, -1]
            # Back on the host once per batch: cut each row after its first end token.
            for row, i in enumerate(idx):
                new, new_logp = tokens[row, :steps].tolist(), logps[row, :steps].tolist()
                end_at = next((j for j, tok in enumerate(new) if tok in end_ids), None)  # index of the first end token
                keep = end_at + 1 if end_at is not None else len(new)  # keep the end token: it is an action
                responses[i], logprobs[i], truncated[i] = new[:keep], new_logp[:keep], end_at is None
        model.train(was_training)
        return responses, truncated, logprobs
