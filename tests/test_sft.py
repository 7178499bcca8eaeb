"""Supervised fine-tuning data: loss over completions only, chats rendered with the tokenizer's chat template."""
import json

import numpy as np
import tokenizers
import transformers

from conftest import read_metrics, run_main, tiny_config
from pretrain import data
from pretrain.data import sft

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
          {"role": "assistant", "content": "Bye now."}],
         [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]]


def _sft_config(tmp_path, **more):
  return tiny_config(**{"data.name": "text", "data.tokenizer": "byte", "model.context": 16,
                        "data.path": str(tmp_path / "train.jsonl"), "data.val_path": str(tmp_path / "val.jsonl"), **more})


def test_targets_are_the_completions_and_their_end_of_text(tmp_path):
  records = [{"prompt": f"q{i}:", "completion": f" é{i}"} for i in range(30)]  # é: two UTF-8 bytes.
  for name, rows in (("train", records), ("val", records[:7])):
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  dataset = data.load(_sft_config(tmp_path, **{"data.prompt_field": "prompt", "data.completion_field": "completion"}))
  counted = sum(b["token_mask"][:, 1:].sum() for b in data.eval_batches(dataset.val, batch_size=4, seq_len=16))
  assert counted == sum(len(r["completion"].encode()) + 1 for r in records[:7])
  batch = data.train_batch(dataset.train, 0, seed=0, batch_size=8, seq_len=16)
  targets = batch["tokens"][batch["token_mask"] == 1]
  assert set(targets.tolist()) <= set(b" \xc3\xa90123456789") | {256}  # Completion bytes and end-of-text only.
  assert "segment_ids" in batch  # Each record is its own document.


def test_a_missing_field_is_one_line_naming_the_file_and_line(tmp_path):
  (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
  (tmp_path / "val.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
  proc = run_main("--config", "configs/quickstart.py:tiny", "--config.data.name=text", "--config.data.tokenizer=byte",
                  f"--config.data.path={tmp_path / 'train.jsonl'}", f"--config.data.val_path={tmp_path / 'val.jsonl'}",
                  "--config.data.prompt_field=prompt", "--config.data.completion_field=completion",
                  "--workdir", tmp_path / "run", check=False)
  assert proc.returncode != 0
  assert f"{tmp_path / 'train.jsonl'}:2 has no text field 'completion'" in proc.stderr.strip().splitlines()[-1]


def _chat_tokenizer(folder):
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(["Be brief. Hi there Hello. Bye now. 2 + 2? 4 user assistant system"], vocab_size=300,
                          special_tokens=["<|endoftext|>"], show_progress=False)
  folder.mkdir()
  bpe.save(str(folder / "tokenizer.json"))
  (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "eos_token": "<|endoftext|>"}))
  return folder


def test_chats_render_as_transformers_apply_chat_template(tmp_path):
  folder = _chat_tokenizer(tmp_path / "tok")
  theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="<|endoftext|>")
  theirs.chat_template = CHATML
  ours = sft.ChatTemplate.of(str(folder))
  for chat in CHATS:
    for prompt in (False, True):
      assert ours.render(chat, add_generation_prompt=prompt) == theirs.apply_chat_template(
          chat, tokenize=False, add_generation_prompt=prompt)
    pieces = ours.pieces(chat, "chat")
    assert "".join(text for text, _ in pieces) == theirs.apply_chat_template(chat, tokenize=False)
    assert [text for text, target in pieces if target] == [
        m["content"] + "<|im_end|>\n" for m in chat if m["role"] == "assistant"]


def test_chat_records_train_on_assistant_turns(tmp_path):
  folder = _chat_tokenizer(tmp_path / "tok")
  for name in ("train", "val"):
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS * 20))
  run_main("--config", "configs/quickstart.py:tiny", "--config.data.name=text", "--config.data.tokenizer=file",
           f"--config.data.tokenizer_path={folder}", f"--config.data.path={tmp_path / 'train.jsonl'}",
           f"--config.data.val_path={tmp_path / 'val.jsonl'}", "--config.data.messages_field=messages",
           "--config.model.context=64", "--workdir", tmp_path / "run")
  theirs = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
  want = 20 * sum(1 + sum(len(theirs.encode(m["content"] + "<|im_end|>\n").ids) for m in chat
                           if m["role"] == "assistant") for chat in CHATS)  # One end-of-text per record.
  assert read_metrics(tmp_path / "run", "val")[-1]["count"] == want
  out = run_main("--workdir", tmp_path / "run", "--prompt", "2 + 2?", "--chat", "--max_new_tokens", "4",
                 "--temperature", "0", "--format", "jsonl", module="pretrain.sample").stdout
  assert json.loads(out.splitlines()[0])["prompt"] == "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n"
