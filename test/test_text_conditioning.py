"""The instruction's way into the transformer: standardised T5 embeddings (`normalize_text`), the pooled
instruction modulating every block through the timestep embedding (`text_modulation`), and the layers that start
at zero (`text_modulation`, `instruction_mixes_observation`)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from test_modeling import _save_stock_cogvideox, make_batch
from test_transformer_parity import _actions, _inputs

from videovla_model.condition_normalization import TEXT_NORMALIZATION_NAME, ConditionNormalizer
from videovla_model.configuration import VideoVLAConfig
from videovla_model.modeling import VideoVLAModel
from videovla_model.transformer import VideoVLATransformer

TINY = VideoVLAConfig.preset("tiny")
TINY_TEXT = dataclasses.replace(TINY, normalize_text=True, text_modulation=True)
TEXT_SHAPE = (TINY.text.max_length, TINY.text.d_model)
INSTRUCTIONS = ["pick up the red cube", "pick up the blue cylinder"]


def random_text_statistics(seed: int = 0) -> ConditionNormalizer:
    generator = torch.Generator().manual_seed(seed)
    return ConditionNormalizer(
        torch.randn(TEXT_SHAPE, generator=generator), torch.rand(TEXT_SHAPE, generator=generator) + 0.5
    )


def perturb_added_layer(transformer: VideoVLATransformer, layer: str, seed: int = 0) -> None:
    """Gives an added conditioning MLP's zero-initialised output layer weights, as training would."""
    mlp = getattr(transformer, layer)
    assert mlp is not None
    generator = torch.Generator().manual_seed(seed)
    last = mlp[-1]
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=generator))


def test_the_instruction_embedding_is_standardised_only_when_the_config_says_so():
    statistics = random_text_statistics()
    normalized = VideoVLAModel(dataclasses.replace(TINY, normalize_text=True), text_normalizer=statistics)
    raw = VideoVLAModel(TINY, text_normalizer=statistics)
    expected = (normalized.raw_prompt_embeddings(INSTRUCTIONS) - statistics.mean) / statistics.std
    torch.testing.assert_close(normalized.encode_prompts(INSTRUCTIONS), expected)
    assert torch.equal(raw.encode_prompts(INSTRUCTIONS), raw.raw_prompt_embeddings(INSTRUCTIONS))


def test_fitted_statistics_bring_out_the_words_that_differ():
    model = VideoVLAModel(TINY)
    instructions = [
        f"pick up the {colour} {shape}" for colour in ("red", "blue", "green") for shape in ("cube", "cone")
    ]
    raw = model.raw_prompt_embeddings(instructions)
    model_with_statistics = VideoVLAModel(
        dataclasses.replace(TINY, normalize_text=True),
        text_encoder=model.text_encoder,
        text_normalizer=ConditionNormalizer.fit(raw),
    )
    standardised = model_with_statistics.encode_prompts(instructions)
    # The shared words dominate the raw embedding; standardised, what tells the instructions apart does.
    assert raw.var(dim=0, correction=0).sum() / raw.pow(2).sum(dim=(1, 2)).mean() < 0.5
    assert standardised.var(dim=0, correction=0).sum() / standardised.pow(2).sum(dim=(1, 2)).mean() == pytest.approx(
        1.0, abs=1e-4
    )


def test_text_statistics_of_the_wrong_shape_and_switching_the_flags_on_a_built_model_are_refused():
    model = VideoVLAModel(TINY_TEXT)
    with pytest.raises(ValueError, match=r"\(text.max_length, text.d_model\) = \(32, 32\)"):
        model.set_text_normalizer(ConditionNormalizer.identity(8, 32))
    with pytest.raises(ValueError, match=r"cannot change \['normalize_text', 'text_modulation'\]"):
        model.config = TINY


# Each added conditioning MLP, with the config flag that switches it on.
ADDED_LAYERS = pytest.mark.parametrize(
    ("layer", "flag"), [("text_modulation", "text_modulation"), ("observation_mixing", "instruction_mixes_observation")]
)


@ADDED_LAYERS
@torch.no_grad()
def test_an_added_layer_starts_as_the_transformer_without_it_and_then_carries_the_instruction(layer, flag):
    config = dataclasses.replace(TINY_TEXT, **{flag: True})
    torch.manual_seed(0)
    transformer = VideoVLATransformer(config).eval()
    inputs = _inputs(config)
    added = getattr(transformer, layer)
    video, actions = transformer(**inputs, noisy_actions=_actions(config))
    setattr(transformer, layer, None)
    stock_video, stock_actions = transformer(**inputs, noisy_actions=_actions(config))
    assert torch.equal(video, stock_video) and torch.equal(actions, stock_actions)

    setattr(transformer, layer, added)
    perturb_added_layer(transformer, layer)
    _, conditioned_actions = transformer(**inputs, noisy_actions=_actions(config))
    assert not torch.allclose(conditioned_actions, stock_actions, atol=1e-3)


@ADDED_LAYERS
def test_a_zero_initialised_added_layer_learns_from_the_first_step(layer, flag):
    config = dataclasses.replace(TINY_TEXT, **{flag: True})
    torch.manual_seed(0)
    transformer = VideoVLATransformer(config)
    _, actions = transformer(**_inputs(config), noisy_actions=_actions(config))
    actions.pow(2).mean().backward()
    first, _, last = getattr(transformer, layer)
    assert last.weight.grad.abs().sum() > 0
    assert first.weight.grad.abs().sum() == 0  # nothing flows back through a zero layer


def test_checkpoint_keeps_the_text_statistics_and_modulation_and_samples_identically(tmp_path, caplog):
    torch.manual_seed(0)
    model = VideoVLAModel(TINY_TEXT, text_normalizer=random_text_statistics()).eval()
    perturb_added_layer(model.transformer, "text_modulation")
    folder = model.save_pretrained(tmp_path / "checkpoint")
    assert (folder / TEXT_NORMALIZATION_NAME).is_file()
    loaded = VideoVLAModel.from_pretrained(folder)
    assert torch.equal(loaded.text_normalizer.mean, model.text_normalizer.mean)
    assert torch.equal(loaded.text_normalizer.std, model.text_normalizer.std)
    image = torch.zeros(1, 3, *TINY.image_size)
    first = model.sample(image, INSTRUCTIONS[:1], generator=torch.Generator().manual_seed(3))
    second = loaded.sample(image, INSTRUCTIONS[:1], generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.actions, second.actions)
    other = loaded.sample(image, INSTRUCTIONS[1:], generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(other.actions, first.actions, atol=1e-4)

    (folder / TEXT_NORMALIZATION_NAME).unlink()
    caplog.set_level(logging.WARNING, logger="videovla_model.checkpointing")
    assert VideoVLAModel.from_pretrained(folder).text_normalizer.is_identity
    assert f"has normalize_text on but no {TEXT_NORMALIZATION_NAME}" in caplog.text
    plain = VideoVLAModel(TINY).save_pretrained(tmp_path / "plain")
    assert not (plain / TEXT_NORMALIZATION_NAME).exists()


def test_from_cogvideox_initialises_the_text_modulation_to_zero(tmp_path):
    _save_stock_cogvideox(tmp_path, TINY_TEXT)
    model = VideoVLAModel.from_cogvideox(tmp_path, TINY_TEXT)
    modulation = model.transformer.text_modulation
    assert modulation is not None
    first, _, last = modulation
    assert first.weight.abs().sum() > 0
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0


def test_a_model_learns_actions_that_only_the_instruction_decides():
    """Same image, two instructions that differ in one word, opposite actions: only reading the text fits them."""
    torch.manual_seed(0)
    config = dataclasses.replace(TINY_TEXT, loss=dataclasses.replace(TINY.loss, text_dropout_prob=0.0))
    instructions = ["pick up the red cube", "pick up the blue cube"]
    raw = VideoVLAModel(config).raw_prompt_embeddings(instructions)
    model = VideoVLAModel(config, text_normalizer=ConditionNormalizer.fit(raw)).train()
    batch = make_batch(config, size=4)
    same_video = batch.video[:1].expand_as(batch.video).clone()
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    batch = dataclasses.replace(
        batch,
        observation=same_video[:, :, 0].clone(),
        video=same_video,
        instructions=[instructions[i % 2] for i in range(4)],
        actions=(0.8 * sign[:, None, None]).expand(4, config.chunk_rows, config.action_dims).clone(),
    )
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    for step in range(80):
        loss = model.compute_loss(batch, torch.Generator().manual_seed(step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    predicted = model.sample(
        batch.observation[:2], instructions, guidance_scale=1.0, generator=torch.Generator().manual_seed(0)
    ).actions
    assert predicted[0].mean() > 0.4 and predicted[1].mean() < -0.4, predicted.mean(dim=(1, 2))
