"""A T5 tokenizer folder as CogVideoX ships it (spiece.model, no tokenizer.json) loads: sentencepiece + protobuf."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import sentencepiece
import torch
from transformers import T5Tokenizer

from videovla_model.configuration import TextConfig, VideoVLAConfig
from videovla_model.modeling import VideoVLAModel
from videovla_model.text import build_tokenizer

INSTRUCTIONS = ["pick up the red cube", "put the blue cube in the bowl", "open the drawer", "close the gripper"]


@pytest.fixture(scope="module")
def spiece_model() -> bytes:
    """A 40-piece unigram model trained on a few instructions (pad 0, eos 1, unk 2 as in T5)."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(INSTRUCTIONS * 50),
        model_writer=model,
        vocab_size=40,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def test_a_folder_with_only_spiece_model_loads_as_a_t5_tokenizer(spiece_model, tmp_path: Path):
    (tmp_path / "spiece.model").write_bytes(spiece_model)
    tokenizer = T5Tokenizer.from_pretrained(str(tmp_path), extra_ids=0)
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spiece_model).encode(INSTRUCTIONS[0])
    assert tokenizer(INSTRUCTIONS[0]).input_ids == [*pieces, 1]  # T5 appends </s>


def test_the_cogvideox_tokenizer_layout_loads_through_build_tokenizer(spiece_model, tmp_path: Path):
    (tmp_path / "spiece.model").write_bytes(spiece_model)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    tokenizer = build_tokenizer(TextConfig(max_length=24), tmp_path)
    assert tokenizer is not None
    ids = tokenizer(INSTRUCTIONS[2], padding="max_length", max_length=24, truncation=True).input_ids
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spiece_model).encode(INSTRUCTIONS[2])
    assert ids == [*pieces, 1] + [0] * (24 - len(pieces) - 1)


def test_a_folder_with_only_spiece_model_loads_through_build_tokenizer(spiece_model, tmp_path: Path):
    (tmp_path / "spiece.model").write_bytes(spiece_model)
    tokenizer = build_tokenizer(TextConfig(tokenizer="t5", max_length=32), tmp_path)
    assert isinstance(tokenizer, T5Tokenizer)
    ids = tokenizer(INSTRUCTIONS[1], padding="max_length", max_length=32, truncation=True).input_ids
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spiece_model).encode(INSTRUCTIONS[1])
    assert ids == [*pieces, 1] + [0] * (32 - len(pieces) - 1)


def test_a_checkpoint_whose_tokenizer_folder_holds_only_spiece_model_loads(spiece_model, tmp_path: Path):
    (tmp_path / "spiece.model").write_bytes(spiece_model)
    tiny = VideoVLAConfig.preset("tiny")
    config = dataclasses.replace(tiny, text=dataclasses.replace(tiny.text, tokenizer="t5", vocab_size=160))
    torch.manual_seed(0)
    model = VideoVLAModel(config, tokenizer=T5Tokenizer.from_pretrained(str(tmp_path)))
    root = model.save_pretrained(tmp_path / "checkpoint")
    tokenizer_folder = root / "tokenizer"
    for path in tokenizer_folder.iterdir():  # the checkpoint as a user assembles it from CogVideoX's spiece.model
        path.unlink()
    (tokenizer_folder / "spiece.model").write_bytes(spiece_model)
    loaded = VideoVLAModel.from_pretrained(root)
    assert isinstance(loaded.tokenizer, T5Tokenizer)
    torch.testing.assert_close(loaded.encode_prompts(INSTRUCTIONS), model.encode_prompts(INSTRUCTIONS))
