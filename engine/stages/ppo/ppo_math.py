"""The arithmetic of PPO for language models, as small pure torch functions.

Shapes: a batch of B responses padded to T tokens. `mask` is 1.0 on the
response tokens the policy chose (up to and including its end-of-turn token)
and 0.0 on padding. Per-token tensors are indexed by response position: the
log-probability, value and reward of position t all belong to the moment the
policy chose response token t.

The stage (engine/stages/ppo/stage.py) strings these together:

    kl       = per_token_kl(logprobs, ref_logprobs)       # the leash
    rewards  = token_rewards(scores, kl, beta, mask)       # RM score at the end, -beta*KL everywhere
    adv, ret = gae(rewards, values, mask, gamma, lam)      # credit assignment
    adv      = masked_whiten(adv, mask)                    # scale-free policy step
    loss     = clipped_policy_loss(...) + vf_coef * clipped_value_loss(...)

and `AdaptiveKLController` moves beta towards a target KL (Ziegler et al.
2019, "Fine-Tuning Language Models from Human Preferences").

Nothing here knows about models, tokenizers or processes, which is what
makes every line checkable by hand (tests/stages/test_ppo_math.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


# --- masked statistics -----------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where mask is 1 (all of them, or along `dim`)."""
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_moments(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[sum, sum of squares, count] of the masked values: what processes add up
    (one all-reduce) to whiten with statistics of the whole global batch."""
    return torch.stack([(values * mask).sum(), (values * values * mask).sum(), mask.sum()])


def mean_and_variance(moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance from `masked_moments` (summed over processes)."""
    total, squares, count = moments.unbind()
    mean = total / count.clamp(min=1)
    variance = (squares / count.clamp(min=1) - mean * mean).clamp(min=0)
    # Bessel's correction: a minibatch of a few dozen tokens would otherwise
    # understate the spread a little.
    variance = variance * count / (count - 1).clamp(min=1)
    return mean, variance


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    shift_mean: bool = True,
    moments: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scale the masked values to unit variance (and zero mean with shift_mean).

    Why whiten advantages: the reward model's scale is arbitrary (and drifts
    as beta changes the KL part), so unwhitened advantages would make the
    effective learning rate depend on it. After whitening, about half the
    tokens are pushed up and half down, whatever the scale.
    `moments` (from `masked_moments`, summed over processes) makes every
    process use the statistics of the global batch; padding stays 0."""
    mean, variance = mean_and_variance(masked_moments(values, mask) if moments is None else moments)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# --- what the policy and the reference say about the tokens --------------------------


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under each position's logits, without materialising a
    second vocabulary-sized tensor (gather, then subtract the log-partition)."""
    chosen = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution: log Z - sum_i p_i * logit_i."""
    probabilities = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probabilities * logits).sum(-1)


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """log p(x) - log q(x) for x drawn from the policy p: an unbiased estimate
    of KL(p || q) whose sum over a response is the sequence's log-ratio. One
    token can be negative; the expectation cannot."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """exp(r) - 1 - r with r = log q(x) - log p(x): also unbiased for KL(p || q),
    never negative, and of lower variance when p and q are close (Schulman,
    "Approximating KL divergence", 2020)."""
    ratio = ref_logprobs - logprobs
    return torch.expm1(ratio) - ratio


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    return kl_k1(logprobs, ref_logprobs) if estimator == "k1" else kl_k3(logprobs, ref_logprobs)


# --- rewards and advantages -------------------------------------------------------------


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, beta: float, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards: -beta * KL on every response token, plus the
    sequence's score on its last token.

    Where the KL goes: on each token, because each token's choice is what
    moved the policy away from the reference there, so GAE credits each
    token with its own divergence. The reward model judges the whole
    response, so its score arrives once, at the end."""
    rewards = -beta * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # responses are left-aligned
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last] += scores * (mask.sum(1) > 0)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards over the tokens:

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}

    The response ends after its last token: V and A past it are 0 (the
    episode is over, nothing more will be earned). Returns (advantages,
    returns = advantages + values), the value function's regression target."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


# --- the losses ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens whose gradient the clip removed
    approx_kl: torch.Tensor  # KL(old || new) since the rollout, k3 estimate


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float,
) -> PolicyLoss:
    """PPO's clipped surrogate: max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    Why clip: the rollout was sampled from the old policy, and the ratio
    re-weights it for the new one; far from 1 that estimate is no longer
    trustworthy. Taking the pessimistic of the two terms removes the
    incentive (the gradient is 0) to push the ratio past 1 + eps on tokens
    with A > 0, or below 1 - eps on tokens with A < 0; moves back towards
    the old policy keep their gradient."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl)


@dataclass(frozen=True)
class ValueLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens where the clipped error was the larger


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range_value: float,
) -> ValueLoss:
    """0.5 * max((V - R)^2, (V_clipped - R)^2), V_clipped within clip_range_value of V_old.

    Why clip the value: the same trust region as the policy's, for the
    value head. The returns of one rollout are noisy; an unclipped step can
    move V a long way to fit them, and a bad V feeds straight back into
    the next advantages. Like the policy's clip it is pessimistic: it only
    removes the gradient for moves that go further than the clip allows."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLoss(loss, clip_fraction)


# --- the KL coefficient -----------------------------------------------------------------------


class FixedKLController:
    """beta never changes."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update(self, kl: float, samples: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.beta = float(state["beta"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al.'s proportional controller: beta grows when the KL is above
    target and shrinks when below,

        error = clip(KL / target - 1, -0.2, 0.2)
        beta *= 1 + error * samples / horizon

    so it takes about `horizon` samples to move beta by e^0.2 at most. The
    clip keeps one noisy batch from swinging beta far."""

    def __init__(self, beta: float, *, target: float, horizon: int) -> None:
        super().__init__(beta)
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, samples: int) -> None:
        if not math.isfinite(kl):
            return  # a NaN KL says something is broken; don't let it poison beta too
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * samples / self.horizon
