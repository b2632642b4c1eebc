"""PPO's arithmetic (engine/stages/ppo/ppo_math.py) against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from engine.stages.ppo import ppo_math


def close(tensor: torch.Tensor, expected: list) -> bool:
    return torch.allclose(tensor, torch.tensor(expected, dtype=tensor.dtype), atol=1e-5)


# --- GAE ----------------------------------------------------------------------------------


def test_gae_matches_the_hand_computation() -> None:
    # Row 0: 3 tokens, gamma = 1, lam = 0.95, the score (1) on the last token.
    #   t=2: delta = 1 + 0   - 0.7 = 0.3   A2 = 0.3
    #   t=1: delta = 0 + 0.7 - 0.6 = 0.1   A1 = 0.1 + 0.95 * 0.3   = 0.385
    #   t=0: delta = 0 + 0.6 - 0.5 = 0.1   A0 = 0.1 + 0.95 * 0.385 = 0.46575
    #   returns = A + V = 0.96575, 0.985, 1.0
    # Row 1: a 2-token response, the third position is padding whose value (9.9)
    # must not leak in: the episode ends after token 1.
    #   t=1: delta = 2 + 0   - 0.5 = 1.5   A1 = 1.5
    #   t=0: delta = 0 + 0.5 - 1.0 = -0.5  A0 = -0.5 + 0.95 * 1.5 = 0.925
    #   returns = 1.925, 2.0, 0 (padding)
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 9.9]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = ppo_math.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert close(advantages, [[0.46575, 0.385, 0.3], [0.925, 1.5, 0.0]])
    assert close(returns, [[0.96575, 0.985, 1.0], [1.925, 2.0, 0.0]])


def test_gae_with_lambda_one_and_zero_values_is_the_discounted_return() -> None:
    # lam = 1, V = 0: A_t = sum_k gamma^k r_{t+k}. gamma = 0.9, r = 1, 0, 2:
    #   A2 = 2;  A1 = 0 + 0.9 * 2 = 1.8;  A0 = 1 + 0.9 * 1.8 = 2.62 (= 1 + 0.81 * 2)
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    advantages, returns = ppo_math.gae(rewards, torch.zeros(1, 3), torch.ones(1, 3), gamma=0.9, lam=1.0)
    assert close(advantages, [[2.62, 1.8, 2.0]])
    assert close(returns, [[2.62, 1.8, 2.0]])


def test_gae_with_lambda_zero_is_the_one_step_td_error() -> None:
    rewards = torch.tensor([[0.0, 1.0]])
    values = torch.tensor([[0.25, 0.5]])
    advantages, _ = ppo_math.gae(rewards, values, torch.ones(1, 2), gamma=1.0, lam=0.0)
    # delta0 = 0 + 0.5 - 0.25 = 0.25;  delta1 = 1 + 0 - 0.5 = 0.5
    assert close(advantages, [[0.25, 0.5]])


# --- whitening ------------------------------------------------------------------------------


def test_whitening_uses_the_masked_tokens_only() -> None:
    # 1, 2, 3, 4: mean 2.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3,
    # std 1.290994; whitened (x - 2.5) / 1.290994 = -1.161895, -0.387298, 0.387298, 1.161895.
    # The fifth value is padding: it changes nothing and comes out 0.
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    whitened = ppo_math.masked_whiten(values, mask)
    assert close(whitened, [[-1.161895, -0.387298, 0.387298], [1.161895, 0.0, 0.0]])
    # Without shifting the mean: (x - 2.5) / std + 2.5.
    kept = ppo_math.masked_whiten(values, mask, shift_mean=False)
    assert close(kept, [[1.338105, 2.112702, 2.887298], [3.661895, 0.0, 0.0]])


def test_whitening_with_moments_summed_over_processes() -> None:
    # Two "processes" each whitening with the global statistics give what one
    # process holding both halves gives.
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    ones = torch.ones(1, 2)
    moments = ppo_math.masked_moments(a, ones) + ppo_math.masked_moments(b, ones)
    both = ppo_math.masked_whiten(torch.cat([a, b]), torch.ones(2, 2))
    assert torch.allclose(ppo_math.masked_whiten(a, ones, moments=moments), both[:1])
    assert torch.allclose(ppo_math.masked_whiten(b, ones, moments=moments), both[1:])


# --- rewards ----------------------------------------------------------------------------------


def test_token_rewards_put_the_score_on_the_last_token_and_the_kl_everywhere() -> None:
    # beta = 0.5: -0.5 * KL on each response token, the score added on the last one.
    #   row 0: -0.05, -0.1, -0.15 + 1 = 0.85
    #   row 1 (2 tokens): -0.25, -0.25 + 2 = 1.75, padding 0
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = ppo_math.token_rewards(torch.tensor([1.0, 2.0]), kl, 0.5, mask)
    assert close(rewards, [[-0.05, -0.1, 0.85], [-0.25, 1.75, 0.0]])


# --- KL estimates -------------------------------------------------------------------------------


def test_kl_estimates_are_zero_for_equal_policies() -> None:
    logprobs = torch.log(torch.tensor([0.1, 0.5, 0.9]))
    assert torch.equal(ppo_math.kl_k1(logprobs, logprobs), torch.zeros(3))
    assert torch.equal(ppo_math.kl_k3(logprobs, logprobs), torch.zeros(3))


def test_k1_can_be_negative_per_token_but_k3_never_is() -> None:
    logprobs = torch.log(torch.tensor([0.1, 0.5, 0.9]))
    ref = torch.log(torch.tensor([0.4, 0.5, 0.2]))
    # k1 = log p - log q: log(0.1/0.4) < 0, 0, log(0.9/0.2) > 0
    assert close(ppo_math.kl_k1(logprobs, ref), [math.log(0.25), 0.0, math.log(4.5)])
    # k3 = exp(r) - 1 - r, r = log q - log p: 4 - 1 - log 4, 0, 2/9 - 1 - log(2/9)
    assert close(ppo_math.kl_k3(logprobs, ref),
                 [3 - math.log(4), 0.0, 2 / 9 - 1 - math.log(2 / 9)])
    random_k3 = ppo_math.kl_k3(torch.randn(1000), torch.randn(1000))
    assert (random_k3 >= 0).all()


def test_both_estimates_average_to_the_true_kl() -> None:
    # Tokens drawn from p: the mean of k1 and of k3 estimates KL(p || q).
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = float((p * (p / q).log()).sum())  # 0.2749
    generator = torch.Generator().manual_seed(0)
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=generator)
    for estimator in ("k1", "k3"):
        estimate = ppo_math.per_token_kl(p.log()[tokens], q.log()[tokens], estimator).mean()
        assert float(estimate) == pytest.approx(exact, abs=0.01), estimator


# --- logits ------------------------------------------------------------------------------------


def test_logprobs_and_entropy_from_logits() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, -10.0, -10.0]]])
    tokens = torch.tensor([[2, 0]])
    assert close(ppo_math.logprobs_of(logits, tokens), [[math.log(0.25), 0.0]])
    entropy = ppo_math.entropy_from_logits(logits)
    assert float(entropy[0, 0]) == pytest.approx(math.log(4))  # uniform over 4
    assert float(entropy[0, 1]) == pytest.approx(0.0, abs=1e-6)  # certain
    assert torch.allclose(ppo_math.logprobs_of(logits, tokens),
                          torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1))


# --- the clipped losses -------------------------------------------------------------------------


def test_policy_clip_removes_the_gradient_only_past_the_clip_in_the_advantage_direction() -> None:
    # clip_range 0.2. Tokens (advantage, ratio):
    #   +1, 1.5  pushed up past 1.2: clipped, gradient 0
    #   +1, 0.5  below 0.8 but moving up is wanted: unclipped, gradient kept
    #   -1, 0.5  pushed down past 0.8: clipped, gradient 0
    #   -1, 1.5  above 1.2 but moving down is wanted: unclipped, gradient kept
    #   +1, 1.1  inside the range: gradient -A * ratio / 5
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0]])
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1]])
    old = torch.zeros(1, 5)
    logprobs = ratios.log().requires_grad_(True)
    result = ppo_math.clipped_policy_loss(logprobs, old, advantages, torch.ones(1, 5), clip_range=0.2)
    result.loss.backward()
    grad = logprobs.grad[0]
    assert grad[0] == 0 and grad[2] == 0
    # d/dlogp of -A * exp(logp) / 5 = -A * ratio / 5
    assert float(grad[1]) == pytest.approx(-0.5 / 5)
    assert float(grad[3]) == pytest.approx(1.5 / 5)
    assert float(grad[4]) == pytest.approx(-1.1 / 5)
    assert float(result.clip_fraction) == pytest.approx(2 / 5)
    # loss = mean(max(-A r, -A clip(r))) = (-1.2 - 0.5 + 0.8 + 1.5 - 1.1) / 5
    assert result.loss.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 1.5 - 1.1) / 5)


def test_policy_loss_at_the_rollout_policy() -> None:
    # ratio 1 everywhere: nothing clipped, approx KL 0, loss = -mean(A) over the mask.
    logprobs = torch.tensor([[-1.0, -2.0, -3.0]])
    advantages = torch.tensor([[1.0, -3.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    result = ppo_math.clipped_policy_loss(logprobs, logprobs, advantages, mask, clip_range=0.2)
    assert float(result.loss) == pytest.approx(1.0)
    assert float(result.clip_fraction) == 0 and float(result.approx_kl) == 0


def test_value_clip_keeps_the_value_near_its_old_estimate() -> None:
    # old V = 0, return 1, clip 0.2:
    #   V = 0.5: clipped to 0.2, error 0.64 > 0.25: the clipped term wins, gradient 0
    #   V = -0.5: clipped to -0.2, error 1.44 < 2.25: unclipped, gradient V - R = -1.5 (/ 2 tokens)
    values = torch.tensor([[0.5, -0.5]], requires_grad=True)
    result = ppo_math.clipped_value_loss(values, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2),
                                         clip_range_value=0.2)
    result.loss.backward()
    assert float(values.grad[0, 0]) == 0
    assert float(values.grad[0, 1]) == pytest.approx(-1.5 / 2)
    assert float(result.clip_fraction) == pytest.approx(0.5)
    assert result.loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2)


# --- the KL coefficient ---------------------------------------------------------------------------


def test_adaptive_kl_controller_moves_beta_towards_the_target() -> None:
    above = ppo_math.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    above.update(kl=12.0, samples=256)  # error clipped to +0.2: beta *= 1 + 0.2 * 256 / 10000
    assert above.beta == pytest.approx(0.1 * 1.00512)
    below = ppo_math.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    below.update(kl=5.4, samples=1000)  # error 5.4 / 6 - 1 = -0.1: beta *= 1 - 0.1 * 0.1
    assert below.beta == pytest.approx(0.1 * 0.99)
    on_target = ppo_math.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    on_target.update(kl=6.0, samples=1000)
    assert on_target.beta == pytest.approx(0.1)
    # Its state is beta: a resumed run continues from it.
    restored = ppo_math.AdaptiveKLController(0.5, target=6.0, horizon=10_000)
    restored.load_state_dict(above.state_dict())
    assert restored.beta == above.beta


def test_fixed_kl_controller_never_moves() -> None:
    fixed = ppo_math.FixedKLController(0.05)
    fixed.update(kl=100.0, samples=10_000)
    assert fixed.beta == 0.05
