"""The Ray engine (xai_onnx.distributed.ray).

Fast tests read files and call the actor class in this process (pyarrow only). The ``slow`` ones start one real Ray
cluster per session on 127.0.0.1: a head in this process and a second node started with ``ray start`` in a
subprocess (two raylets), each with one CPU and a 100 MB object store, and shut it down at the end. Where this
process may unshare its mount namespace (root), the second node sees an empty directory in place of one that holds a
bundle, so that shipping is tested against a node that truly cannot see the path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from xai_onnx.cli import main  # noqa: E402
from xai_onnx.distributed import ray as xray  # noqa: E402
from xai_onnx.errors import BundleError, InputError  # noqa: E402
from xai_onnx.model import Model  # noqa: E402
from xai_onnx.registry import make_explainer  # noqa: E402

TEXTS = ["good movie", "bad", "very dull movie", "the movie not fun", "a good fun movie", "", "dull dull bad",
         "not good", "very very good", "the the the"]
MB = 2 ** 20
NODE_WAIT_S = 90
RUN_S = 240  # one run on the test cluster, at most (a few seconds on a quiet machine)


def _corpus(d: Path) -> dict[str, str | None]:
    """A JSONL file with bad rows, a text file and a Parquet file; returns every expected id -> its text (None: an
    error row)."""
    d.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str | None] = {}
    lines = []
    for i, t in enumerate(TEXTS):
        lines.append(json.dumps({"id": f"j{i}", "text": t, "label": i % 3, "source": "unit"}))
        expect[f"j{i}"] = t
    lines.insert(3, "")  # blank: skipped, but counted in row numbers
    lines.append("{not json")
    lines.append(json.dumps({"id": "no-text", "txt": "typo"}))
    lines.append(json.dumps(["a", "list"]))
    jsonl = d / "a.jsonl"
    jsonl.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n")
    expect[f"{jsonl}:{len(TEXTS) + 2}"] = None
    expect["no-text"] = None
    expect[f"{jsonl}:{len(TEXTS) + 4}"] = None
    expect[f"{jsonl}:{len(TEXTS) + 5}"] = None
    txt = d / "b.txt"
    txt.write_text("good\n\nbad movie\n", encoding="utf-8")
    expect[f"{txt}:1"] = "good"
    expect[f"{txt}:3"] = "bad movie"
    pq.write_table(pa.table({"text": ["fun", "not dull"], "id": [7, 8]}), d / "c.parquet")
    expect["7"], expect["8"] = "fun", "not dull"
    return expect


def _read_here(paths: list[str]) -> list[dict]:
    return xray.read_rows(paths, rows_per_block=3)  # pieces of 3 lines: row numbers must carry across them


# ---- fast: no cluster ---------------------------------------------------------------------------------------------
def test_reader_keeps_every_row_and_says_why_one_has_no_text(tmp_path):
    expect = _corpus(tmp_path / "in")
    rows = _read_here(xray.list_files(tmp_path / "in"))
    assert sorted(r["id"] for r in rows) == sorted(expect)
    by_id = {r["id"]: r for r in rows}
    for key, text in expect.items():
        assert by_id[key]["text"] == text
        assert (by_id[key]["error"] is None) == (text is not None), by_id[key]
    assert by_id["j0"]["gold_label"] == "0" and json.loads(by_id["j0"]["input"]) == {"source": "unit"}
    assert by_id["j3"]["row"] == 5  # the blank line before it counts
    assert "JSON" in by_id[f"{tmp_path / 'in' / 'a.jsonl'}:{len(TEXTS) + 2}"]["error"]
    assert "text" in by_id["no-text"]["error"]
    assert "UTF-8" in by_id[f"{tmp_path / 'in' / 'a.jsonl'}:{len(TEXTS) + 5}"]["error"]
    assert by_id["8"]["row"] == 2 and by_id["8"]["file"].endswith("c.parquet")


def test_list_files_takes_a_file_a_directory_or_a_glob(tmp_path):
    _corpus(tmp_path / "in")
    (tmp_path / "in" / "_SUCCESS").write_text("")
    (tmp_path / "in" / ".hidden").write_text("x\n")
    names = lambda fs: [Path(f).name for f in fs]  # noqa: E731
    assert names(xray.list_files(tmp_path / "in")) == ["a.jsonl", "b.txt", "c.parquet"]
    assert names(xray.list_files(str(tmp_path / "in" / "*.jsonl"))) == ["a.jsonl"]
    assert names(xray.list_files(tmp_path / "in" / "b.txt")) == ["b.txt"]
    with pytest.raises(InputError, match="not found"):
        xray.list_files(tmp_path / "nope")
    with pytest.raises(InputError, match="no file matches"):
        xray.list_files(str(tmp_path / "in" / "*.csv"))


def test_materialise_checks_the_shipped_bundle_by_hash(tmp_path, handmade):
    bundle, _ = handmade
    digest = xray.bundle_digest(bundle)
    files = {p.relative_to(bundle).as_posix(): p.read_bytes() for p in xray._bundle_files(bundle)}
    got = xray.materialise(digest, files, into=tmp_path / "cache")
    assert xray.bundle_digest(got) == digest and got.name == digest
    assert xray.materialise(digest, files, into=tmp_path / "cache") == got  # a second actor on the node reuses it
    bad = dict(files)
    bad["manifest.json"] = bad["manifest.json"] + b" "
    with pytest.raises(BundleError, match="sha256"):
        xray.materialise(digest, bad, into=tmp_path / "other")


def test_ray_flags_need_the_ray_engine(handmade, capsys):
    bundle, _ = handmade
    rc = main(["explain", str(bundle), "--text", "good", "--method", "saliency", "--workers", "2", "--out", "x"])
    assert rc == 2
    assert "--workers, --out: only with --engine ray" in capsys.readouterr().err


def _worker(bundle: Path, method: str | None, **options) -> xray._Worker:
    kind = "predict" if method is None else "explain"
    cfg = xray.WorkerConfig(kind=kind, bundle=str(bundle), fingerprint=xray._manifest_fingerprint(bundle), method=method,
                            options=options, target=None, threads=1, batch_size=64, precision="float32", providers=None)
    return xray._Worker(xray.asdict(cfg))


def test_one_failing_text_does_not_take_its_batch_with_it(tmp_path, handmade, monkeypatch):
    bundle, _ = handmade
    w = _worker(bundle, "ig", steps=8, output="logit")
    rows = _read_here(xray.list_files(_corpus_dir(tmp_path)))
    real = w.explainer.explain

    def explain(texts, target=None, **kw):
        if "bad movie" in texts:
            raise RuntimeError("boom")
        return real(texts, target=target, **kw)

    monkeypatch.setattr(w.explainer, "explain", explain)
    out = w(pa.Table.from_pylist(rows, schema=xray.input_schema())).to_pylist()
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    failed = {r["id"]: r["error"] for r in out if r["error"]}
    assert failed.pop(f"{tmp_path / 'in' / 'b.txt'}:3") == "RuntimeError: boom"
    assert all(r["error"] is not None for r in rows if r["id"] in failed)
    local = make_explainer(Model(bundle), "ig", {"steps": 8, "output": "logit"})
    for r in out:
        if r["error"] is None:
            assert r["scores"] == pytest.approx(local.explain([r["text"]])[0].scores.tolist(), abs=1e-6)


PAIR_ROWS = [{"id": "p0", "text": "the movie", "text_pair": "very good fun"},
             {"id": "s1", "text": "not fun bad movie"},  # a single text among the pairs
             {"id": "p2", "text": "dull", "text_pair": "a good movie"},
             {"id": "bad", "text": "good", "text_pair": 3}]


def _pair_corpus(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIR_ROWS), encoding="utf-8")
    return d / "pairs.jsonl"


def _check_pairs(rows: list[dict], bundle: Path) -> None:
    """Every pair row explained as the local engine explains the pair (segments included), the single text as a
    single text, the bad text_pair as an error row."""
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == sorted(r["id"] for r in PAIR_ROWS) and len(rows) == len(PAIR_ROWS)
    assert by_id["bad"]["error"] == '"text_pair" must be a string' and by_id["bad"]["scores"] is None
    ig = make_explainer(Model(bundle), "ig", {"steps": 8, "output": "logit"})
    for src in PAIR_ROWS[:3]:
        r = by_id[src["id"]]
        pair = src.get("text_pair")
        local = ig.explain([src["text"]], text_pairs=None if pair is None else [pair])[0]
        assert r["error"] is None and r["text_pair"] == pair
        np.testing.assert_allclose(r["scores"], local.scores, rtol=0, atol=1e-6)
        assert r["segments"] == (None if pair is None else list(local.segments))  # null at special tokens, as JSON
        if pair is not None:
            assert 1 in r["segments"] and r["tokens"] == list(local.tokens)


def test_sentence_pairs_in_one_batch_with_single_texts(tmp_path):
    from handmade import build_with_pairs

    build_with_pairs(tmp_path / "b")
    w = _worker(tmp_path / "b", "ig", steps=8, output="logit")
    rows = _read_here([str(_pair_corpus(tmp_path / "in"))])
    out = w(pa.Table.from_pylist(rows, schema=xray.input_schema())).to_pylist()
    assert [r["id"] for r in out] == [r["id"] for r in PAIR_ROWS]
    _check_pairs(out, tmp_path / "b")


def _corpus_dir(tmp_path: Path) -> Path:
    _corpus(tmp_path / "in")
    return tmp_path / "in"


# ---- slow: one real two-node cluster per session ------------------------------------------------------------------
_NODE2 = """
import sys
import ray._private.services as services
services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1: Ray swaps it for a routable address
from ray.scripts.scripts import main
sys.argv = ["ray"] + sys.argv[1:]
main()
"""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _can_hide() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


class TwoNodes:
    def __init__(self, root: Path):
        self.root = root
        self.hidden = root / "hidden"  # the second node sees an empty directory here (when it can be hidden)
        self.hidden.mkdir()
        self.can_hide = _can_hide()
        self.marker = uuid.uuid4().hex  # in every process of this cluster's environment: the kill test finds its actors
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        os.environ["XAI_ONNX_TEST_CLUSTER"] = self.marker
        import ray
        import ray._private.services as services

        self.temp = Path(f"/tmp/xr-{self.marker[:8]}")  # short: Ray's socket paths must fit in 107 bytes
        resolve = services.resolve_ip_for_localhost
        services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1: Ray swaps it for a routable address
        try:
            ray.init(num_cpus=1, object_store_memory=100 * MB, include_dashboard=False, _node_ip_address="127.0.0.1",
                     _temp_dir=str(self.temp), log_to_driver=False)
        finally:
            services.resolve_ip_for_localhost = resolve
        gcs = ray.get_runtime_context().gcs_address
        assert gcs.startswith("127.0.0.1:"), gcs
        env = dict(os.environ)
        start = [sys.executable, "-c", _NODE2, "start", f"--address={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                 f"--object-store-memory={100 * MB}", '--resources={"far": 4}', "--disable-usage-stats", "--block"]
        if self.can_hide:
            cmd = " ".join(f"'{a}'" for a in start)
            start = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     f"mount -t tmpfs -o size=1m none '{self.hidden}' && exec {cmd}"]
        self.log = open(self.root / "node2.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(start, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + NODE_WAIT_S
        while time.monotonic() < deadline:
            if len([n for n in ray.nodes() if n["Alive"]]) == 2:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"the second node did not join: {(self.root / 'node2.log').read_text()[-2000:]}")

    def stop(self) -> None:
        import ray

        if self.proc is not None:
            leftover = _descendants(self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            for pid in leftover:  # raylet, plasma and workers of the second node, if SIGTERM left any
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.log.close()
        ray.shutdown()
        shutil.rmtree(self.temp, ignore_errors=True)
        os.environ.pop("XAI_ONNX_TEST_CLUSTER", None)

    def actor_pids(self) -> list[int]:
        """The pids of this cluster's explainer actors (Ray titles them ``ray::MapWorker(MapBatches(_Worker))``)."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
                if not cmd.startswith(b"ray::MapWorker(MapBatches(_Worker))"):
                    continue
                if f"XAI_ONNX_TEST_CLUSTER={self.marker}".encode() in Path(f"/proc/{d}/environ").read_bytes():
                    pids.append(int(d))
            except OSError:
                continue
        return pids


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    pytest.importorskip("ray.data")
    c = TwoNodes(tmp_path_factory.mktemp("ray"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _local(bundle: Path, method: str, texts: list[str], **options) -> dict[str, list[float]]:
    ex = make_explainer(Model(bundle), method, options)
    return {t: r.scores.tolist() for t, r in zip(texts, ex.explain(texts))}


def _check_complete(rows: list[dict], expect: dict[str, str | None], local: dict[str, list[float]], exact: bool) -> None:
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(expect)  # every input id exactly once, bad rows included
    for r in rows:
        text = expect[r["id"]]
        if text is None:
            assert r["error"] and r["scores"] is None
            continue
        assert r["error"] is None and r["text"] == text
        if exact:
            assert r["scores"] == local[text]
        else:
            np.testing.assert_allclose(r["scores"], local[text], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_results_equal_the_local_engine_and_no_row_is_lost(cluster, tmp_path, handmade):
    bundle, _ = handmade
    expect = _corpus(tmp_path / "in")
    texts = sorted({t for t in expect.values() if t is not None})
    ds = xray.read_corpus(tmp_path / "in", rows_per_block=4)
    out = xray.explain_dataset(ds, bundle, "ig", steps=16, output="logit", workers=2, num_cpus=0.5, batch_rows=4)
    rows = out.take_all()
    _check_complete(rows, expect, _local(bundle, "ig", texts, steps=16, output="logit"), exact=False)
    good = next(r for r in rows if r["id"] == "j0")
    assert good["gold_label"] == "0" and json.loads(good["input"]) == {"source": "unit"}
    assert set(good["probabilities"]) == {"negative", "neutral", "positive"} and good["method"] == "ig"
    # one text a batch: the same onnxruntime calls as the local engine, bit for bit
    rows = xray.explain_dataset(ds, bundle, "saliency", workers=2, num_cpus=0.5, batch_rows=1).take_all()
    _check_complete(rows, expect, {t: _local(bundle, "saliency", [t])[t] for t in texts}, exact=True)


@pytest.mark.slow
def test_sentence_pairs_on_the_cluster(cluster, tmp_path):
    from handmade import build_with_pairs

    build_with_pairs(tmp_path / "b")
    ds = xray.read_corpus(_pair_corpus(tmp_path / "in"), rows_per_block=2)
    rows = xray.explain_dataset(ds, tmp_path / "b", "ig", steps=8, output="logit", workers=2, num_cpus=0.5,
                                batch_rows=2).take_all()
    _check_pairs(rows, tmp_path / "b")


@pytest.mark.slow
def test_cli_writes_every_row_and_a_summary(cluster, tmp_path, handmade, capsys):
    bundle, _ = handmade
    expect = _corpus(tmp_path / "in")
    rc = main(["explain", str(bundle), "--input", str(tmp_path / "in" / "*"), "--engine", "ray", "--method", "occlusion",
               "--workers", "2", "--cpus-per-worker", "0.5", "--out", str(tmp_path / "out"), "--out-format", "jsonl",
               "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    n_bad = sum(t is None for t in expect.values())
    assert (summary["rows_in"], summary["rows_out"], summary["errors"]) == (len(expect), len(expect), n_bad)
    assert "texts/s" in captured.err
    rows = [json.loads(line) for f in sorted((tmp_path / "out").iterdir()) for line in f.read_text().splitlines()]
    texts = sorted({t for t in expect.values() if t is not None})
    _check_complete(rows, expect, _local(bundle, "occlusion", texts), exact=False)
    # predict over the same corpus, as Parquet
    rc = main(["predict", str(bundle), "--input", str(tmp_path / "in"), "--engine", "ray", "--workers", "1",
               "--cpus-per-worker", "0.5", "--out", str(tmp_path / "pred")])
    assert rc == 0
    table = pq.read_table(tmp_path / "pred")
    assert sorted(table.column("id").to_pylist()) == sorted(expect)
    model = Model(bundle)
    for r in table.to_pylist():
        if r["error"] is None:
            assert r["label"] == model.predict([r["text"]])[0].label
    # a rerun into the same directory is refused instead of mixing files
    assert main(["predict", str(bundle), "--input", str(tmp_path / "in"), "--engine", "ray",
                 "--out", str(tmp_path / "pred")]) == 2
    assert "not empty" in capsys.readouterr().err


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie until its raylet reaps it


def _bounded(fn, seconds: float):
    """fn() in a thread, given ``seconds``: a run that neither finishes nor fails fails the test instead of hanging."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        pytest.fail(f"the run neither finished nor failed within {seconds:.0f} s")
    return box["value"]


def _run_and_kill(bundle: Path, cluster: TwoNodes, corpus: Path, retries: int) -> tuple[list[dict], list[int]]:
    """Explain ``corpus`` with two actors; once the first rows are out, SIGKILL one actor (by pid) while the rest is
    still in flight. Returns the rows and the killed pid."""
    ds = xray.read_corpus(corpus, rows_per_block=2)
    out = xray.explain_dataset(ds, bundle, "ig", steps=128, output="logit", workers=2, num_cpus=0.5, batch_rows=2,
                               retries=retries)
    rows: list[dict] = []
    killed: list[int] = []
    before = set(cluster.actor_pids())  # an earlier run's actors may linger, idle, for a moment
    for row in out.iter_rows():
        rows.append(row)
        if not killed:
            pids = sorted(set(cluster.actor_pids()) - before)
            assert pids, "no explainer actor found while rows were still coming"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    return rows, killed


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_restarted_and_its_batch_retried(cluster, tmp_path, handmade):
    bundle, _ = handmade
    rng = np.random.default_rng(0)
    words = ["good", "bad", "movie", "the", "very", "not", "fun", "dull", "a"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(40)]
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "t.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    expect: dict[str, str | None] = {f"t{i}": t for i, t in enumerate(texts)}
    rows, killed = _bounded(lambda: _run_and_kill(bundle, cluster, corpus, retries=3), RUN_S)
    assert killed and _dead(killed[0])
    assert len(rows) > 2  # the kill came before the end
    _check_complete(rows, expect, _local(bundle, "ig", sorted(set(texts)), steps=128, output="logit"), exact=False)
    # without retries the same kill fails the run: the retries above are what kept it whole
    with pytest.raises(Exception) as info:  # noqa: B017 - Ray's own error type for a dead actor
        _bounded(lambda: _run_and_kill(bundle, cluster, corpus, retries=0), RUN_S)
    assert "actor" in str(info.value).lower() or "died" in str(info.value).lower()


@pytest.mark.slow
def test_a_node_that_cannot_see_the_bundle_gets_it_shipped(cluster, tmp_path, handmade):
    if not cluster.can_hide:
        pytest.skip("hiding a directory from the second node needs root and unshare(1)")
    src, _ = handmade
    bundle = cluster.hidden / "bundle"
    shutil.copytree(src, bundle, dirs_exist_ok=True)
    far = {"far": 1.0}  # actors on the second node only
    assert len(xray.nodes_without_bundle(bundle)) == 1
    expect = _corpus(tmp_path / "in")
    texts = sorted({t for t in expect.values() if t is not None})
    local = _local(bundle, "saliency", texts)
    ds = xray.read_corpus(tmp_path / "in")
    for ship in (True, None):  # explicit, and automatic because one node lacks the path
        rows = _bounded(lambda: xray.explain_dataset(ds, bundle, "saliency", num_cpus=0.5, resources=far,
                                                     ship_bundle=ship).take_all(), RUN_S)
        _check_complete(rows, expect, local, exact=False)
    # without shipping the actor says what is wrong and what to do
    with pytest.raises(Exception) as info:  # noqa: B017 - Ray wraps the actor's error in its own type
        _bounded(lambda: xray.explain_dataset(ds, bundle, "saliency", num_cpus=0.5, resources=far, ship_bundle=False,
                                              retries=0).take_all(), RUN_S)
    inner = xray._unwrap(info.value)
    assert isinstance(inner, BundleError), info.value
    assert "is not there on node" in str(inner) and "--ship-bundle" in str(inner)
