"""Fixtures for the publish tests: a finished LoRA run on the builtin tiny model, a fake Hub
on 127.0.0.1 and an environment with no saved token and no way out to the internet."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
import yaml

FAKE_TOKEN = "hf_fake_token_for_tests"
HUB_LIFETIME_S = 120  # the fake hub shuts itself down after this long, whatever happens


# --------------------------------------------------------------------------- environment


@pytest.fixture(autouse=True)
def isolated_hub_env(monkeypatch, tmp_path):
    """No real token, no saved login, no xet, no proxies, and no sockets except to loopback."""
    from huggingface_hub import constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE", "HF_ENDPOINT",
                "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"), raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # never the real hub, even by accident

    real_connect = socket.socket.connect

    def loopback_only(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    raise OSError(f"test tried to reach {host}: no network in tests")
            except ValueError:
                if host != "localhost":
                    raise OSError(f"test tried to reach {host}: no network in tests") from None
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    yield


# --------------------------------------------------------------------------- the run directory


def seq_logprob(model, ids: torch.Tensor) -> float:
    """Sum of log p(ids[t] | ids[:t]) over t >= 1."""
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids.unsqueeze(0)).logits[0, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[1:].unsqueeze(-1)).squeeze(-1)
    return float(logps.sum())


FIXED_IDS = torch.tensor([1] + [4 + b for b in "The harmless assistant says hello.".encode()], dtype=torch.long)

RECIPE = {
    "model": {"name_or_path": "builtin:tiny-mistral", "dtype": "float32", "attn_implementation": "sdpa",
              "chat_template": "hh"},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
    "data": {"pairs": "data/harmless_helpful", "max_length": 256},
    "loss": {"type": ["sigmoid", "ipo"], "weights": [1.0, 0.5], "beta": 0.1, "label_smoothing": 0.0},
    "training": {"learning_rate": 5.0e-6, "max_tokens_per_batch": 4096, "gradient_accumulation_steps": 1,
                 "num_epochs": 1, "packing": True, "prefix_sharing": True, "seed": 42},
    "output_dir": "runs/tiny",
    "hub": {"push": False, "repo_id": None, "private": True},
}

DATA_STATS = {
    "splits": {
        "train": {"rows": 30, "by_source": {"hh_harmless": 12, "pku_safer": 10, "local_helpful": 8},
                  "by_label": {"harmless": 22, "helpful": 8}},
        "test": {"rows": 3, "by_source": {"hh_harmless": 1, "pku_safer": 1, "local_helpful": 1},
                 "by_label": {"harmless": 2, "helpful": 1}},
    },
    "sources": {
        "hh_harmless": {"type": "hh_rlhf", "path": "Anthropic/hh-rlhf", "label": "harmless", "read": 14, "kept": 13},
        "pku_safer": {"type": "pku_saferlhf", "path": "PKU-Alignment/PKU-SafeRLHF", "label": "harmless",
                      "read": 12, "kept": 11},
        "local_helpful": {"type": "hh_rlhf", "path": "samples/helpful.jsonl", "label": "helpful", "read": 9,
                          "kept": 9},
    },
}


def _metrics_lines() -> list[dict]:
    lines = []
    for step in (1, 2, 3):
        lines.append({"step": step, "loss": 0.69 - 0.01 * step, "rewards/chosen": 0.01 * step,
                      "rewards/rejected": -0.01 * step, "rewards/accuracies": 0.5 + 0.1 * step,
                      "rewards/margins": 0.02 * step, "logps/chosen": -40.0, "logps/rejected": -41.0,
                      "learning_rate": 5e-6, "tokens_per_second": 1234.5, "epoch": step / 3})
    lines.append({"step": 3, "eval/loss": 0.66, "eval/rewards/accuracies": 0.75, "eval/rewards/margins": 0.05})
    return lines


def build_run(run_dir: Path) -> Path:
    """A finished LoRA run following the trainer's output contract."""
    from conftest import save_lora_run  # tests/conftest.py

    run_dir.mkdir(parents=True)
    save_lora_run(run_dir, lora_b_scale=0.05)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in _metrics_lines()))
    (run_dir / "data_stats.json").write_text(json.dumps(DATA_STATS, indent=2))
    (run_dir / "eval_results.json").write_text(json.dumps({"eval/loss": 0.66, "eval/rewards/accuracies": 0.75}))
    return run_dir


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory) -> Path:
    """Read-only: tests that change a run copy it first."""
    return build_run(tmp_path_factory.mktemp("lora") / "run")


@pytest.fixture(scope="session")
def adapter_logprob(lora_run) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(lora_run / "base_model")
    return seq_logprob(PeftModel.from_pretrained(base, lora_run), FIXED_IDS)


# --------------------------------------------------------------------------- the fake hub


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


class FakeHub:
    """Answers the calls huggingface_hub makes for create_repo, list_repo_tree, repo_info and a
    create_commit of regular (inline base64) files. mode="forbidden" answers 403 to everything."""

    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.repos: dict[str, dict] = {}  # repo_id -> {"files": {path: bytes}, "commits": [sha], "private": bool}
        self.commits: list[dict] = []  # every commit made: {"repo", "summary", "ops"}
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            timeout = 10

            def log_message(self, *args):  # keep test output quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def _dispatch(self, method: str):
                path = unquote(urlsplit(self.path).path)
                body = self._body() if method == "POST" else b""
                with hub.lock:
                    hub.requests.append((method, path))
                    try:
                        status, payload, headers = hub.route(method, path, body, self.headers)
                    except Exception as err:  # a bug in the fake: make it visible
                        status, payload, headers = 500, {"error": f"fake hub: {err!r}"}, {}
                self._send(status, payload, headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.timer = threading.Timer(HUB_LIFETIME_S, self.server.shutdown)
        self.timer.daemon = True

    def start(self) -> "FakeHub":
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # routing -------------------------------------------------------------------------

    def route(self, method: str, path: str, body: bytes, headers) -> tuple[int, object, dict]:
        if self.mode == "forbidden":
            return 403, {"error": "You don't have the rights to create a model under this namespace"}, {}
        if headers.get("Authorization") != f"Bearer {FAKE_TOKEN}":
            return 401, {"error": "Invalid credentials in Authorization header"}, {}
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {}, {}
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}"
            url = f"{self.endpoint}/{repo_id}"
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": url}, {}
            attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            self.repos[repo_id] = {"files": {".gitattributes": attributes},
                                   "commits": [hashlib.sha1(repo_id.encode()).hexdigest()],
                                   "private": req.get("visibility") == "private"}
            return 200, {"url": url, "name": repo_id, "id": repo_id}, {}
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id = f"{parts[2]}/{parts[3]}"
            repo = self.repos.get(repo_id)
            if repo is None:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            rest = parts[4:]
            if method == "GET" and (not rest or rest[0] == "revision"):
                return 200, {"id": repo_id, "sha": repo["commits"][-1], "private": repo["private"],
                             "siblings": [{"rfilename": p} for p in sorted(repo["files"])]}, {}
            if method == "GET" and rest and rest[0] == "tree":
                return 200, [{"type": "file", "path": p, "size": len(d), "oid": git_blob_id(d)}
                             for p, d in sorted(repo["files"].items())], {}
            if method == "POST" and rest and rest[0] == "preupload":
                files = json.loads(body)["files"]
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                        "oid": git_blob_id(repo["files"][f["path"]]) if f["path"] in repo["files"]
                                        else None} for f in files]}, {}
            if method == "POST" and rest and rest[0] == "commit":
                return self._commit(repo_id, repo, body)
        self.unexpected.append((method, path))
        return 404, {"error": f"fake hub has no route for {method} {path}"}, {}

    def _commit(self, repo_id: str, repo: dict, body: bytes):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]
        assert header["key"] == "header"
        ops = []
        for item in lines[1:]:
            value = item["value"]
            if item["key"] == "file":
                assert value["encoding"] == "base64"
                repo["files"][value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                repo["files"].pop(value["path"])
            else:
                return 400, {"error": f"fake hub does not support {item['key']}"}, {}
            ops.append((item["key"], value["path"]))
        sha = hashlib.sha1(f"{repo['commits'][-1]}{len(self.commits)}{ops}".encode()).hexdigest()
        repo["commits"].append(sha)
        self.commits.append({"repo": repo_id, "summary": header["value"]["summary"], "ops": ops})
        return 200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True}, {}


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    yield hub
    hub.stop()


@pytest.fixture
def forbidden_hub(monkeypatch):
    hub = FakeHub(mode="forbidden").start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    yield hub
    hub.stop()


@pytest.fixture
def private_tmp(monkeypatch, tmp_path) -> Path:
    """tempfile's default folder redirected, so a test can check nothing was left behind."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def read_front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end]), text[end + 5:]
