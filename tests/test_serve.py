"""`dlkit serve` as a user runs it: the real server in a process of its own on 127.0.0.1, a real HTTP client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import QUICK, run_cli, run_folders, run_main
from services import free_port, model_server

pytestmark = pytest.mark.slow

TEXTS = ["the acting was truly wonderful", "the plot was not good", "a dull film", "the music was great"]


def train(root: Path, *overrides: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    result = run_cli("train", *overrides, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_folders(root)[-1]


def predicted(run: Path, inputs: list[str], *options: str) -> list[dict]:
    """What `dlkit predict -f jsonl` prints for the inputs."""
    result = run_cli("predict", str(run), *inputs, "-f", "jsonl", *options, cwd=run.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def same_records(served: list[dict], expected: list[dict]) -> None:
    """Equal records; probabilities equal to 1e-5 (a batch's padding may move the last digit)."""
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key == "probability":
                assert got[key] == pytest.approx(value, abs=1e-5)
            elif key == "top":
                assert [t["label"] for t in got[key]] == [t["label"] for t in value]
            else:
                assert got[key] == value, key


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("serve-text"), "model=textcnn", "trainer.max_epochs=3", "callbacks=minimal",
                 "logger=csv")


@pytest.fixture(scope="module")
def text_server(text_run):
    with model_server(text_run, "--batch-timeout", "20", cwd=text_run.parent) as server:
        yield server


def test_answers_equal_predict_and_info_describes_the_run(text_server, text_run):
    answer = httpx.post(text_server.url + "/predict", json={"inputs": TEXTS, "top_k": 2})
    assert answer.status_code == 200, answer.text
    same_records(answer.json()["outputs"], predicted(text_run, TEXTS, "--top-k", "2"))
    assert answer.json()["warnings"] == []
    assert [o["label"] for o in answer.json()["outputs"][:2]] == ["positive", "negative"]
    info = httpx.get(text_server.url + "/info").json()
    assert (info["run"], info["model"], info["kind"]) == (text_run.name.rsplit("-", 1)[1], "TextCNN",
                                                          "text_classification")
    assert info["classes"] == ["negative", "positive"] and info["dlkit_version"]
    assert httpx.get(text_server.url + "/health").json() == {"status": "ok"}
    spec = httpx.get(text_server.url + "/openapi.json").json()
    assert "/predict" in spec["paths"] and "PredictRequest" in json.dumps(spec)
    # it listens on 127.0.0.1 only (the kernel's table of listening sockets: address 0100007F, state 0A)
    port = f"{int(text_server.url.rsplit(':', 1)[1]):04X}"
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[1].endswith(f":{port}") and line.split()[3] == "0A"]
    assert listening == [f"0100007F:{port}"]


def test_concurrent_requests_are_answered_in_fewer_model_calls(text_server):
    before = httpx.get(text_server.url + "/info").json()["batching"]
    texts = [f"{TEXTS[i % 4]} {'really ' * (i % 5)}" for i in range(50)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=text_server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/predict", json={"inputs": [t]}) for t in texts))

    answers = asyncio.run(send_all())
    assert [a.status_code for a in answers] == [200] * 50
    after = httpx.get(text_server.url + "/info").json()["batching"]
    assert after["requests"] - before["requests"] == 50
    calls = after["model_calls"] - before["model_calls"]
    assert calls < 50, after
    # each answer is the one its text gets in a batch of all 50 (padding moves no label, and probabilities by < 1e-5)
    alone = httpx.post(text_server.url + "/predict", json={"inputs": texts}).json()["outputs"]
    same_records([a.json()["outputs"][0] for a in answers], alone)


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_goes_on(text_server):
    url = text_server.url + "/predict"
    cases = [
        ({"inputs": []}, 422, "inputs: empty: give at least one input"),
        ({"inputs": ["fine", 3]}, 422, "inputs[1]: Input should be a valid string (got 3)"),
        ({"inputs": "a text"}, 422, "inputs: Input should be a valid list"),
        ({"texts": ["a"]}, 422, "inputs: Field required"),
        ({"inputs": ["a"], "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1"),
        ({"inputs": ["a"], "topk": 2}, 422, "topk: Extra inputs are not permitted (got 2)"),
        ({"inputs": ["a"], "beam_size": 65}, 422, "beam_size: Input should be less than or equal to 64"),
        ({"inputs": ["a"] * 65}, 413, "inputs: 65 inputs; this server takes at most 64 per request"),
    ]
    for body, status, message in cases:
        answer = httpx.post(url, json=body)
        assert (answer.status_code, answer.json()["error"][:len(message)]) == (status, message), body
        assert "\n" not in answer.json()["error"]
    broken = httpx.post(url, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert (broken.status_code, broken.json()) == (422, {"error": "body: not valid JSON (at character 12)"})
    form = httpx.post(url, content=b"inputs=a", headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422 and "Content-Type: application/json" in form.json()["error"]
    long_text = "good " * 500
    answer = httpx.post(url, json={"inputs": ["fine", long_text]})
    assert answer.status_code == 200
    max_length = httpx.get(text_server.url + "/info").json()["max_length"]
    assert answer.json()["warnings"] == [f"inputs[1]: longer than the model's {max_length} tokens; only the first "
                                         f"{max_length} were read"]
    assert httpx.get(text_server.url + "/health").status_code == 200


def test_sigterm_answers_every_request_in_flight_then_exits_0(text_run):
    # a batch waits 400 ms for company: the 30 requests are all inside the server when SIGTERM comes
    with model_server(text_run, "--batch-timeout", "400", cwd=text_run.parent) as server:

        async def send_and_stop() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                sent = [asyncio.create_task(client.post("/predict", json={"inputs": [f"{TEXTS[i % 4]} {i}"]}))
                        for i in range(30)]
                async with httpx.AsyncClient(base_url=server.url) as watcher:
                    deadline = time.monotonic() + 30
                    while (await watcher.get("/info")).json()["batching"]["requests"] < 30:
                        assert time.monotonic() < deadline, "the 30 requests did not reach the server"
                        await asyncio.sleep(0.01)
                assert not any(task.done() for task in sent)  # all inside the server, none answered yet
                server.process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*sent)

        answers = asyncio.run(send_and_stop())
        code, log = server.stop()
    assert [a.status_code for a in answers] == [200] * 30
    assert all(len(a.json()["outputs"]) == 1 for a in answers)
    assert code == 0, log
    assert log.rstrip().endswith("Stopped.")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("serve-digits"), *QUICK, "trainer.limit_train_batches=null",
                 "trainer.max_epochs=3")


def test_images_as_base64_arrays_and_png_and_a_corrupt_one(digits_run, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    files, encoded = [], []
    for index in range(6):
        buffer = io.BytesIO()
        np.save(buffer, digits.images[index])
        files.append(tmp_path / f"{index}.npy")
        files[-1].write_bytes(buffer.getvalue())
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    image = Image.fromarray((digits.images[6] * 255 / 16).astype(np.uint8))
    image.save(tmp_path / "6.png")
    files.append(tmp_path / "6.png")
    encoded.append("data:image/png;base64," + base64.b64encode((tmp_path / "6.png").read_bytes()).decode())
    with model_server(digits_run, "--max-batch-size", "8", "--batch-timeout", "300", cwd=digits_run.parent) as server:
        answer = httpx.post(server.url + "/predict", json={"inputs": encoded, "top_k": 3})
        assert answer.status_code == 200, answer.text
        expected = predicted(digits_run, [str(f) for f in files], "--top-k", "3")
        same_records(answer.json()["outputs"], [{**r, "input": i} for i, r in enumerate(expected)])
        corrupt = httpx.post(server.url + "/predict",
                             json={"inputs": [encoded[0], base64.b64encode(b"no image").decode()]})
        assert corrupt.status_code == 422
        assert corrupt.json()["error"].startswith("inputs[1]: these bytes are no image PIL can read")
        # a corrupt image in the same batch as good ones fails its own request only (a 300 ms batch timeout: the
        # four requests sent together share one batch)
        async def together() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                bodies = [encoded[:2], [base64.b64encode(b"no image").decode()], encoded[2:4], encoded[4:5]]
                return await asyncio.gather(*(client.post("/predict", json={"inputs": b}) for b in bodies))

        mixed = asyncio.run(together())
        assert [a.status_code for a in mixed] == [200, 422, 200, 200]
        assert [o["label"] for a in (mixed[0], mixed[2], mixed[3]) for o in a.json()["outputs"]] == \
            [r["label"] for r in expected[:5]]
        not_base64 = httpx.post(server.url + "/predict", json={"inputs": ["%%%"]})
        assert not_base64.status_code == 422 and not_base64.json()["error"].startswith("inputs[0]: not base64")
        assert httpx.post(server.url + "/predict", json={"inputs": encoded[:1]}).status_code == 200
        code, log = server.stop(sig="SIGINT")  # Ctrl+C
    assert code == 0 and log.rstrip().endswith("Stopped."), log


def test_seq2seq_with_beam_search_and_bert_fill_mask(tmp_path):
    seq2seq = train(tmp_path / "seq2seq", "model=transformer", "model.d_model=32", "model.d_ff=64", "model.layers=1",
                    "data.num_examples=300", "trainer.max_epochs=1", "callbacks=minimal", "logger=csv")
    sources = ["a1 b2 c3", "k3 j2"]
    with model_server(seq2seq, cwd=seq2seq.parent) as server:
        answer = httpx.post(server.url + "/predict", json={"inputs": sources, "beam_size": 3})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == predicted(seq2seq, sources, "--beam-size", "3")
    bert = train(tmp_path / "bert", "model=bert_pretrain", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "callbacks=minimal", "logger=csv",
                 "data.synthetic_documents=60", "data.max_length=32", "data.tokenizer.vocab_size=300",
                 "model.hidden_size=32", "model.intermediate_size=64")
    masked = ["the [MASK] was cold", "a [MASK] film"]
    with model_server(bert, cwd=bert.parent) as server:
        answer = httpx.post(server.url + "/predict", json={"inputs": masked, "top_k": 3})
    assert answer.status_code == 200, answer.text
    served, expected = answer.json()["outputs"], predicted(bert, masked, "--top-k", "3")
    assert [[[f["token"] for f in fill] for fill in r["fills"]] for r in served] == \
        [[[f["token"] for f in fill] for fill in r["fills"]] for r in expected]


def test_two_workers_share_the_port(text_run):
    with model_server(text_run, "--workers", "2", cwd=text_run.parent) as server:
        pids = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:  # each new connection goes to either worker
            pids.add(httpx.get(server.url + "/info").json()["pid"])
        answer = httpx.post(server.url + "/predict", json={"inputs": TEXTS[:2]})
        code, log = server.stop(sig="SIGINT")  # Ctrl+C: the supervisor stops both workers
    assert len(pids) == 2
    assert [o["label"] for o in answer.json()["outputs"]] == ["positive", "negative"]
    assert code == 0, log


def test_refusals_before_serving(text_run, tmp_path):
    missing = run_main("serve", "no-such-run", "--port", str(free_port()), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run_main("serve", str(text_run), "--port", str(port), cwd=tmp_path)
    assert taken.returncode == 1
    assert taken.stderr.strip() == f"error: port {port} on 127.0.0.1 is in use; choose another with --port."
    nowhere = run_main("serve", str(text_run), "--host", "203.0.113.9", "--port", str(free_port()), cwd=tmp_path)
    assert nowhere.returncode == 2 and "--host 203.0.113.9: cannot serve there" in nowhere.stderr
