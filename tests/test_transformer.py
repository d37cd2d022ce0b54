"""The Transformer: masks, padding, caching and beam search invariants; seq2seq end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, run_folders, summary

from dlkit.data.parallel import ParallelTextDataModule, SyntheticReverseDataModule
from dlkit.models.transformer import Transformer, sinusoidal_positions


@pytest.fixture(params=[False, True], ids=["post-norm", "pre-norm"])
def model(request) -> Transformer:
    torch.manual_seed(0)
    return Transformer(30, 32, d_model=32, heads=4, layers=2, d_ff=64, max_length=40, pre_norm=request.param).eval()


@pytest.fixture
def source() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(7, 30, (3, 7))
    mask = torch.ones_like(ids)
    ids[0, 4:], mask[0, 4:] = 0, 0
    return ids, mask


def test_a_future_token_cannot_change_an_earlier_position(model, source):
    target = torch.randint(7, 32, (3, 6))
    changed = target.clone()
    changed[:, 4:] = 9
    before, after = model(*source, target), model(*source, changed)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-5)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_padding_cannot_change_the_output(model, source):
    ids, mask = source
    target = torch.randint(7, 32, (3, 6))
    noisy = ids.clone()
    noisy[0, 4:] = 17  # garbage under the padding mask
    assert torch.allclose(model(noisy, mask, target)[0], model(ids, mask, target)[0], atol=1e-5)
    alone = model(ids[:1, :4], mask[:1, :4], target[:1])
    assert torch.allclose(alone[0], model(ids, mask, target)[0], atol=1e-5)


def test_kv_cache_equals_recomputation_and_beam_one_equals_greedy(model, source):
    cached, recomputed = model.greedy(*source, max_length=15), model.greedy(*source, max_length=15, use_cache=False)
    assert torch.equal(cached, recomputed)
    assert torch.equal(model.beam_search(*source, beam_size=1, max_length=15), cached)
    beams = model.beam_search(*source, beam_size=4, max_length=15)
    assert beams.shape[0] == 3 and (beams[:, 0] == model.bos_id).all()


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(model, source):
    def log_likelihood(ids: torch.Tensor) -> torch.Tensor:
        logits = model(*source, ids[:, :-1]).log_softmax(-1)
        picked = logits.gather(-1, ids[:, 1:, None]).squeeze(-1)
        return (picked * (ids[:, 1:] != model.pad_id)).sum(-1)

    greedy = model.greedy(*source, max_length=8)
    beam = model.beam_search(*source, beam_size=5, length_penalty=0.0, max_length=8)
    width = max(greedy.shape[1], beam.shape[1])
    greedy, beam = (torch.nn.functional.pad(x, (0, width - x.shape[1])) for x in (greedy, beam))
    assert (log_likelihood(beam) >= log_likelihood(greedy) - 1e-4).all()


def test_sinusoidal_positions_follow_the_paper():
    table = sinusoidal_positions(50, 16)
    assert torch.allclose(table[:, 0], torch.sin(torch.arange(50.0)))
    assert torch.allclose(table[3, 1], torch.cos(torch.tensor(3.0)))
    assert torch.allclose(table[7, 2], torch.sin(torch.tensor(7.0) / 10000 ** (2 / 16)))


def test_parallel_text_from_tsv_or_aligned_files_with_separate_vocabularies(tmp_path):
    (tmp_path / "train.tsv").write_text("ein haus\ta house\nzwei katzen\ttwo cats\n" * 20)
    (tmp_path / "src.txt").write_text("ein haus\nzwei katzen\n" * 20)
    (tmp_path / "tgt.txt").write_text("a house\ntwo cats\n" * 20)
    tsv = ParallelTextDataModule(train_file=str(tmp_path / "train.tsv"), cache_dir=str(tmp_path / "c"),
                                 tokenizer={"kind": "word"}, shared_vocab=False)
    tsv.setup()
    aligned = ParallelTextDataModule(train_file=str(tmp_path / "src.txt"), train_target_file=str(tmp_path / "tgt.txt"),
                                     cache_dir=str(tmp_path / "c"), tokenizer={"kind": "word"}, shared_vocab=False)
    aligned.setup()
    assert len(tsv.train_set) == len(aligned.train_set) == 36
    batch = tsv.train_set.__getitems__([0, 1])
    assert batch["tgt_ids"][:, 0].tolist() == [tsv.bos_id] * 2
    assert tsv.decode(batch["tgt_ids"][0].tolist()) in ("a house", "two cats")
    assert tsv.src_tokenizer.token_to_id("haus") is not None and tsv.tgt_tokenizer.token_to_id("haus") is None
    (tmp_path / "short.txt").write_text("a\n")
    with pytest.raises(Exception, match="not aligned"):
        ParallelTextDataModule(train_file=str(tmp_path / "src.txt"), train_target_file=str(tmp_path / "short.txt"),
                               cache_dir=str(tmp_path / "c")).setup()


def test_hf_translation_reads_a_local_dataset_folder(tmp_path):
    from dlkit.data.parallel import HFTranslationDataModule

    folder = tmp_path / "multi30k"
    folder.mkdir()
    for split, rows in (("train", 30), ("validation", 4), ("test", 4)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"de": "ein hund", "en": "a dog"}) + "\n"
                                                       for _ in range(rows)))
    dm = HFTranslationDataModule(name=str(folder), source_column="de", target_column="en", tokenizer={"kind": "word"},
                                 cache_dir=str(tmp_path / "c"), data_dir=str(tmp_path / "hf"))
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 4, 4)


def test_synthetic_reverse_is_what_it_says():
    [chunk] = SyntheticReverseDataModule(num_examples=50, cache_dir="unused").sources()["train"]()
    assert len(chunk["src"]) == 50
    assert all(target.split() == source.split()[::-1] for source, target in zip(chunk["src"], chunk["tgt"]))


@pytest.mark.slow
def test_transformer_trains_through_the_cli_and_translates(tmp_path):
    small = ["model.d_model=64", "model.d_ff=128", "model.layers=2", "data.num_examples=3000", "logger=csv",
             "callbacks=minimal", "trainer.max_epochs=6", "optimizer.lr=0.002"]
    result = run_cli("train", "model=transformer", *small, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_folders(tmp_path)
    metrics = summary(run)["metrics"]
    assert metrics["test/token_acc"] > 0.6 and metrics["test/bleu"] > 20
    losses = [m for m in (run / "train.log").read_text().splitlines() if "val sample" in m]
    assert losses  # decoded samples are logged each validation epoch
    predicted = run_cli("predict", "latest", "a1 b2 c3", "--format", "jsonl", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "translation" in json.loads(predicted.stdout.splitlines()[0])
    beam = run_cli("predict", "latest", "--beam-size", "3", "-f", "jsonl", "a1 b2 c3", "k3 j2", cwd=tmp_path)
    assert beam.returncode == 0, beam.stderr[-2000:]
    assert len(beam.stdout.splitlines()) == 2
    (tmp_path / "source.txt").write_text("a1 b2 c3\n\nk3 j2\n")  # an empty line stays an empty line
    plain = run_cli("predict", "latest", "--beam-size", "3", "-f", "text", "-i", "source.txt", cwd=tmp_path)
    first, second = (json.loads(line)["translation"] for line in beam.stdout.splitlines())
    assert plain.stdout.splitlines() == [first, "", second]

    # export: next-token logits for (source, target prefix), lengths dynamic in ONNX
    import onnxruntime

    from dlkit import inference
    from dlkit.export import example_inputs

    for fmt in ("onnx", "torchscript"):
        exported = run_cli("export", "latest", "-f", fmt, cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr[-2000:]
    loaded = inference.load(str(run))
    names, tensors = example_inputs(loaded)
    assert names == ["src_ids", "src_mask", "tgt_ids", "tgt_mask"]
    metadata = json.loads((run / "export" / "onnx" / "model.json").read_text())
    assert (metadata["kind"], metadata["postprocessing"]["bos_id"]) == ("seq2seq", loaded.datamodule.spec.bos_id)
    session = onnxruntime.InferenceSession(str(run / "export" / "onnx" / "model.onnx"))
    shorter = [t[:, :3] if n.startswith("tgt") else t for n, t in zip(names, tensors)]
    for inputs in (tensors, shorter):
        with torch.no_grad():
            expected = loaded.task.model(*inputs)
        feeds = {i.name: inputs[names.index(i.name)].numpy() for i in session.get_inputs()}
        assert np.allclose(session.run(None, feeds)[0], expected.numpy(), atol=1e-4)
    scripted = torch.jit.load(str(run / "export" / "torchscript" / "model.pt"))
    with torch.no_grad():
        assert torch.allclose(scripted(*tensors), loaded.task.model(*tensors), atol=1e-5)


def _task(dm, model, **kwargs):
    from dlkit.tasks.seq2seq import Seq2SeqTask

    return Seq2SeqTask(model, dm.spec, optimizer=lambda params: torch.optim.Adam(params), **kwargs)


def test_decoding_stops_near_the_longest_training_target_not_at_the_models_limit(tmp_path):
    dm = SyntheticReverseDataModule(num_examples=60, max_words=6, cache_dir=str(tmp_path))
    dm.setup()
    longest = int(dm.train_set.tgt.lengths().max())
    assert dm.spec.extra["longest_target"] == longest <= 8
    torch.manual_seed(0)
    model = Transformer(dm.spec.src_vocab_size, dm.spec.tgt_vocab_size, pad_id=dm.pad_id, bos_id=dm.bos_id,
                        eos_id=dm.eos_id, d_model=16, heads=2, layers=1, d_ff=32, max_length=256)
    model.generator.bias.data[dm.eos_id] = -1e4  # an untrained model that never stops by itself
    model.eval()
    task = _task(dm, model)
    assert longest < task.decode_limit() <= longest + 5
    batch = dm.val_set.__getitems__([0, 1])
    ids = model.greedy(batch["src_ids"], batch["src_mask"], max_length=task.decode_limit())
    assert ids.shape[1] == task.decode_limit()
    assert len(task.generate(batch)[0].split()) <= task.decode_limit()
    assert _task(dm, model, max_decode_length=12).decode_limit() == 12
    assert _task(dm, model, max_decode_length=1000).decode_limit() == 256  # capped by the position table


def test_cased_tokenizer_keeps_umlauts_and_bleu_uses_the_raw_references(tmp_path):
    (tmp_path / "train.tsv").write_text("das haus\tdas Häuschen\nzwei katzen\tzwei Kätzchen\n" * 20)
    (tmp_path / "val.tsv").write_text("ein haus\tein Straße über Zürich\n")
    dm = ParallelTextDataModule(train_file=str(tmp_path / "train.tsv"), val_file=str(tmp_path / "val.tsv"),
                                cache_dir=str(tmp_path / "c"), tokenizer={"kind": "word"})
    dm.setup()
    assert dm.tgt_tokenizer.token_to_id("Häuschen") is not None
    assert dm.decode(dm.train_set[0][1]) in ("das Häuschen", "zwei Kätzchen")
    model = Transformer(dm.spec.src_vocab_size, dm.spec.tgt_vocab_size, pad_id=dm.pad_id, bos_id=dm.bos_id,
                        eos_id=dm.eos_id, d_model=16, heads=2, layers=1, d_ff=32).eval()
    task = _task(dm, model)
    task.trainer = type("T", (), {"datamodule": dm})()  # what Lightning gives the task during fit
    batch = dm.val_set.__getitems__([0])
    # the re-decoded target would drop the unknown words; BLEU compares with the reference as written
    assert task._references(batch, "val") == ["ein Straße über Zürich"]
    from dlkit.data.tokenizers import train_tokenizer

    uncased = train_tokenizer(["Zürich"], lowercase=True)
    assert uncased.token_to_id("zurich") is not None


def test_data_longer_than_the_position_table_is_refused_before_training(tmp_path):
    from omegaconf import OmegaConf

    from dlkit.build import build_model
    from dlkit.errors import UsageError

    dm = SyntheticReverseDataModule(num_examples=40, max_length=300, cache_dir=str(tmp_path))
    dm.setup()
    cfg = OmegaConf.create({"_target_": "dlkit.models.transformer.Transformer", "d_model": 16, "heads": 2,
                            "layers": 1, "d_ff": 32, "max_length": 256})
    with pytest.raises(UsageError, match=r"data.max_length=300 needs model.max_length >= 302"):
        build_model(cfg, dm.spec)
    cfg.max_length = 302
    assert build_model(cfg, dm.spec)[0].max_length == 302


def test_transformer_base_trains_with_the_papers_optimizer_and_schedule():
    import math

    from dlkit.config import compose
    from dlkit.tasks.schedules import inverse_sqrt

    cfg = compose(["model=transformer_base"])
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert list(cfg.optimizer.betas) == [0.9, 0.98] and cfg.optimizer.eps == 1e-9
    assert cfg.scheduler._target_.endswith("inverse_sqrt") and cfg.scheduler.warmup_steps == 4000
    assert (cfg.model.d_model, cfg.model.layers, cfg.data._target_.rsplit(".", 1)[-1]) == (
        512, 6, "SyntheticReverseDataModule")
    # optimizer.lr with the flat schedule is the paper's lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    schedule = inverse_sqrt(optimizer, 10, "val/bleu", warmup_steps=4000)["scheduler"]
    for step in (1, 4000, 16000):
        paper = 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
        assert math.isclose(cfg.optimizer.lr * schedule.lr_lambdas[0](step - 1), paper, rel_tol=1e-3)
    small = compose(["model=transformer", "optimizer.lr=0.01"])  # the CPU preset keeps its own recipe
    assert small.optimizer._target_ == "torch.optim.AdamW" and small.optimizer.lr == 0.01
    assert compose(["model=transformer_base", "optimizer.lr=0.002"]).optimizer.lr == 0.002
    # another optimizer takes none of Adam's settings
    sgd = compose(["model=transformer_base", "optimizer=sgd"]).optimizer
    assert sgd._target_ == "torch.optim.SGD" and "betas" not in sgd and "eps" not in sgd
