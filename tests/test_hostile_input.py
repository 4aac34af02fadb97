"""Hostile or careless input to the CLI and the Python API: one clear error naming the argument, never a traceback
or a silent default; user text never becomes special tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SST2_MODEL
from inprocess import run_cli
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from xai_onnx import InputError, Model
from xai_onnx.methods import METHODS
from xai_onnx.tokenization import TextEncoder


def cli(*args: str | bytes) -> subprocess.CompletedProcess:
    """The CLI with bytes for stdout and stderr: in this process, or in a new one where argv holds raw bytes."""
    if any(isinstance(a, bytes) for a in args):
        return subprocess.run([sys.executable, "-m", "xai_onnx.cli", *args], capture_output=True, timeout=300)
    proc = run_cli(*(str(a) for a in args))
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.encode(), proc.stderr.encode())


def one_line_usage_error(proc: subprocess.CompletedProcess, needle: str) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err and needle in err, err
    return err


# ---- item 12: zero is a value, not "use the default"; every count and port is checked --------------------------
@pytest.mark.parametrize("flag,value,method", [("--steps", "0", "ig"), ("--window", "0", "occlusion"),
                                               ("--stride", "0", "occlusion"), ("--epsilon", "0", "fd"),
                                               ("--steps", "-1", "ig")])
def test_zero_or_negative_method_option_is_refused(handmade, flag, value, method):
    proc = cli("explain", str(handmade[0]), "--text", "good movie", "--method", method, flag, value)
    err = one_line_usage_error(proc, flag.lstrip("-"))
    assert not proc.stdout, err


@pytest.mark.parametrize("spec", [",", " , ", "ig,,saliency"])
def test_empty_method_list_is_refused(handmade, spec):
    proc = cli("explain", str(handmade[0]), "--text", "good movie", "--method", spec)
    one_line_usage_error(proc, "method")
    assert not proc.stdout


@pytest.mark.parametrize("command,flag,value", [
    ("predict", "--threads", "-3"), ("predict", "--threads", "0"), ("predict", "--batch-size", "0"),
    ("predict", "--batch-size", "two"), ("serve", "--max-texts", "0"), ("serve", "--max-chars", "-5"),
    ("serve", "--port", "70000"), ("serve", "--port", "-1"), ("evaluate", "--limit", "0")])
def test_bad_counts_and_ports_are_usage_errors(handmade, tmp_path, command, flag, value):
    extra = {"predict": ["--text", "good"], "serve": [], "evaluate": ["--data", str(tmp_path / "none.jsonl")]}[command]
    proc = cli(command, str(handmade[0]), *extra, flag, value)
    err = one_line_usage_error(proc, f"argument {flag}")
    assert len(err.strip().splitlines()[-1]) < 200  # argparse: usage, then one error line


# ---- item 13: repeated flags accumulate ----------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--text", "good movie", "bad"], ["--text", "good movie", "--text", "bad"]])
@pytest.mark.parametrize("command", ["predict", "explain"])
def test_repeated_text_flags_accumulate(handmade, args, command):
    extra = ["--method", "occlusion"] if command == "explain" else []
    proc = cli(command, str(handmade[0]), *args, *extra)
    assert proc.returncode == 0, proc.stderr
    assert [r["text"] for r in json.loads(proc.stdout)["results"]] == ["good movie", "bad"]


# ---- item 15: argv that is not UTF-8; Python arguments of the wrong type -----------------------------------------
def test_argv_that_is_not_utf8_is_a_usage_error(handmade):
    proc = cli("predict", str(handmade[0]), "--text", b"good \x80 movie")
    one_line_usage_error(proc, "not valid UTF-8")
    assert not proc.stdout


def test_lone_surrogate_in_python_text_names_the_text(handmade):
    from xai_onnx import Saliency

    model = Model(handmade[0])
    with pytest.raises(InputError, match=r"texts\[1\].*surrogate"):
        model.predict(["good", "bad \udc80"])
    with pytest.raises(InputError, match=r"texts\[0\].*surrogate"):
        Saliency(model).explain(["\ud800"])


@pytest.mark.parametrize("text", [None, 5, {"a": 1}, b"good", "good"])
def test_explain_refuses_what_is_not_a_list_of_texts(handmade, text):
    from xai_onnx import Occlusion

    with pytest.raises(InputError, match="texts"):
        Occlusion(Model(handmade[0])).explain(text)


@pytest.mark.parametrize("kwargs,needle", [
    ({"batch_size": "8"}, "batch_size"), ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"), ({"threads": "two"}, "threads"), ({"threads": -3}, "threads"),
    ({"threads": 1.5}, "threads"), ({"providers": 5}, "providers"), ({"providers": ["CPUExecutionProvider", 3]}, r"providers\[1\]"),
    ({"providers": [("CPUExecutionProvider", "x")]}, r"providers\[0\]")])
def test_model_arguments_are_checked(handmade, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        Model(handmade[0], **kwargs)


@pytest.mark.parametrize("bundle", [None, 5, ["a"]])
def test_model_bundle_must_be_a_path(bundle):
    with pytest.raises(InputError, match="bundle"):
        Model(bundle)


def test_one_provider_name_is_one_provider(handmade):
    model = Model(handmade[0], providers="CPUExecutionProvider")
    assert model.providers == ["CPUExecutionProvider"]
    assert Model(handmade[0], providers=("CPUExecutionProvider", {})).providers == [("CPUExecutionProvider", {})]


@pytest.mark.parametrize("name,kwargs", [("occlusion", {"window": "2"}), ("occlusion", {"window": 1.5}),
                                         ("occlusion", {"stride": 0}), ("ig", {"n_steps": 0}),
                                         ("fd", {"epsilon": 0.0})])
def test_explainer_options_are_checked(handmade, name, kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs)).replace("n_", "")):
        METHODS[name](Model(handmade[0]), **kwargs)


# ---- item 16: special tokens typed in a text are text ----------------------------------------------------------
def _byte_level_bpe(directory: Path) -> Path:
    """A RoBERTa-style tokenizer (byte-level BPE, <s> ... </s>) trained on a few lines, with its special tokens."""
    from tokenizers import trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a good movie", "a bad film <s> </s> s> <s", "the plot is dull"] * 5, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    path = directory / "bpe.json"
    tok.save(str(path))
    return path


def _unigram_with_special_pieces(directory: Path) -> Path:
    """An XLM-R-style Unigram vocabulary that holds ``<s>`` and ``</s>`` as pieces with the best scores: plain text
    can segment into them even when special tokens are not matched as such."""
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0), ("<", -3.0), ("s", -3.0),
             (">", -3.0), ("/", -3.0), ("\u2581a", -1.0), ("a", -2.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    path = directory / "unigram.json"
    tok.save(str(path))
    return path


def _tokenizer_files(tmp_path: Path) -> list[tuple[str, Path]]:
    out = [("byte-level-bpe", _byte_level_bpe(tmp_path)), ("unigram", _unigram_with_special_pieces(tmp_path))]
    if (SST2_MODEL / "tokenizer.json").is_file():
        out.append(("bert-wordpiece", SST2_MODEL / "tokenizer.json"))
    return out


TYPED = ["[CLS] [SEP] [PAD] [MASK] [UNK]", "<s> </s> <pad> <mask> <unk>", "a<s>a</s>a", "good [SEP] bad </s><s> x"]


def test_typed_special_tokens_never_become_special_ids(tmp_path):
    for name, path in _tokenizer_files(tmp_path):
        raw = Tokenizer.from_file(str(path))
        unk = raw.token_to_id("[UNK]") if raw.token_to_id("[UNK]") is not None else raw.token_to_id("<unk>")
        forbidden = {i for i, t in raw.get_added_tokens_decoder().items() if t.special} - {unk}
        enc = TextEncoder(path, 64)
        for e in enc.encode(TYPED) + enc.encode(TYPED, TYPED[::-1]):
            user = ~e.special
            assert not set(e.ids[user].tolist()) & forbidden, (name, e.text, e.tokens, e.ids)
            n_special = int(e.special.sum())
            assert n_special == (2 if e.text_pair is None else (3 if name == "bert-wordpiece" else 4)), (name, e.tokens)
            assert all(0 <= a <= b <= max(len(e.text), len(e.text_pair or "")) for a, b in e.offsets)


def test_typed_special_tokens_keep_bert_offsets():
    if not (SST2_MODEL / "tokenizer.json").is_file():
        pytest.skip(f"{SST2_MODEL} is absent")
    text = "good [SEP] bad"
    e = TextEncoder(SST2_MODEL / "tokenizer.json", 64).encode([text])[0]
    assert e.tokens == ("[CLS]", "good", "[", "sep", "]", "bad", "[SEP]")
    assert [text[a:b].lower() for (a, b), sp in zip(e.offsets, e.special) if not sp] == ["good", "[", "sep", "]", "bad"]


def test_unigram_piece_with_a_special_id_is_read_as_unknown(tmp_path):
    path = _unigram_with_special_pieces(tmp_path)
    plain = Tokenizer.from_file(str(path))
    plain.encode_special_tokens = True
    assert 0 in plain.encode("a <s> a", add_special_tokens=False).ids  # the leak this guards against
    e = TextEncoder(path, 64).encode(["a <s> a"])[0]
    assert e.ids[0] == 0 and e.special[0]  # the real sequence start stays
    assert 0 not in e.ids[~e.special] and 3 in e.ids[~e.special]


def test_empty_text_warning_agrees_with_the_scores(handmade):
    model = Model(handmade[0])
    for name, cls in METHODS.items():
        for r in cls(model).explain(["", "   "]):
            (note,) = [w for w in r.warnings if "no tokens to attribute" in w]
            assert ("every score is 0" in note) == (not np.any(r.scores)), (name, r.scores, note)
            if np.any(r.scores):
                assert "[CLS]" in note and "[SEP]" in note



def test_single_text_commands_refuse_sentence_pairs(handmade, tmp_path):
    """attack, influence, prototypes and report read single texts: a row with a "text_pair" is refused, naming the
    file and line, instead of the second text being dropped in silence (the model would have been explained on
    something it was not given)."""
    bundle = str(handmade[0])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"text": "good", "label": "positive"}\n'
                     '{"text": "bad", "text_pair": "awful", "label": "negative"}\n', encoding="utf-8")
    single = tmp_path / "single.jsonl"
    single.write_text('{"text": "good", "label": "positive"}\n{"text": "bad", "label": "negative"}\n', encoding="utf-8")
    cases = {
        "attack": ["attack", bundle, "--input", pairs],
        "influence": ["influence", bundle, "--train", pairs, "--text", "good"],
        "influence ": ["influence", bundle, "--train", single, "--input", pairs],
        "prototypes": ["prototypes", bundle, "--data", pairs],
        "report": ["report", bundle, "--data", pairs, "--out", tmp_path / "r1"],
        "report ": ["report", bundle, "--data", single, "--train", pairs, "--out", tmp_path / "r2"],
    }
    for what, args in cases.items():
        proc = run_cli(*(str(a) for a in args))
        assert proc.returncode == 2, (what, proc.stderr)
        assert f"{what.strip()} reads single texts, and {pairs} line 2 has a \"text_pair\"" in proc.stderr, proc.stderr
    assert run_cli("prototypes", bundle, "--data", str(single), "--n-prototypes", "1").returncode == 0
