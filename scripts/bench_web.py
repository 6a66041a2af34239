"""`scripts/bench web`: the browser reader's decrypt throughput against `csfs get`.

One vault on the moto server holds one random file. `csfs get` reads it (timed
as a subprocess), then the reader page (web/dist, served by csfs.web) opens the
same vault in Debian's Chromium (Playwright) and saves the file; the page
reports the time from the click to the last verified chunk. Peak RSS of the
renderer and of the browser process (where Chromium keeps Blob bytes) is
sampled from /proc while it runs. Both outputs are compared with the input.
Page memory as a person's browser has it is measured once more with Chromium
driven over a bare DevTools pipe (no Network domain, which would keep response
bodies in the renderer): the renderer's RSS, which counts about 100 MiB of
Chromium's code pages shared with its other processes, and its private part
(RssAnon, the memory footprint of Chromium's task manager). A second such run
serves the page cross-origin isolated (COOP and COEP, this server only) and
samples the page's own count, performance.measureUserAgentSpecificMemory(),
made eager with Blink's ForceEagerMeasureMemory feature.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import BenchError, human, run_timed
from benchlib.env import Env, bench_env

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS) or its private part (RssAnon: what
    Chromium's task manager calls the memory footprint, without the shared code
    pages that every Chromium process maps)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        if pid in (0, 1):
            return False
        if pid == ancestor:
            return True
        pid = _ppid(pid)
    return False


def _chromium_pids() -> dict[str, list[int]]:
    """The processes of the Chromium this benchmark started, by role."""
    out: dict[str, list[int]] = {"renderer": [], "browser": [], "other": []}
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            # Zygote children rewrite their cmdline into one space-separated string.
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if not cmd or b"chromium" not in cmd[0] or not _descends(int(d), me):
            continue
        kinds = [a for a in cmd if a.startswith(b"--type=")]
        role = "browser" if not kinds else "renderer" if kinds[0] == b"--type=renderer" else "other"
        out[role].append(int(d))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak = {"renderer": 0, "browser": 0, "renderer_private": 0}

    def run(self) -> None:
        while not self.stop.is_set():
            pids = _chromium_pids()
            # The page's renderer is the largest one; the browser process is one.
            for role in ("renderer", "browser"):
                self.peak[role] = max([self.peak[role], *(_rss_kib(p) for p in pids[role])])
            private = [_rss_kib(p, "RssAnon") for p in pids["renderer"]]
            self.peak["renderer_private"] = max([self.peak["renderer_private"], *private])
            time.sleep(0.1)


def _browser_read(env: Env, bucket: str, size: int,
                  save: str) -> tuple[float, float, dict[str, int], str]:
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from csfs.web import dist_dir, make_server

    server = make_server(dist_dir(), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [url], "AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": ["*"],
        "ExposeHeaders": ["Content-Range", "Content-Length", "ETag"]}]})
    try:
        with sync_playwright() as pw:
            # A normal profile, on disk: an incognito context (Playwright's
            # new_context) keeps the origin-private file system in the browser
            # process's memory, so the whole file would show there.
            profile = tempfile.mkdtemp(prefix="csfs-bench-chromium-", dir="/var/tmp")
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
                accept_downloads=True)
            page = browser.new_page()
            page.goto(f"{url}/index.html?save={save}")
            page.set_input_files("#keyfile", str(env.key))
            page.fill("#endpoint", env.endpoint)
            page.fill("#bucket", bucket)
            page.fill("#prefix", "v")
            page.fill("#akid", os.environ["AWS_ACCESS_KEY_ID"])
            page.fill("#secret", os.environ["AWS_SECRET_ACCESS_KEY"])
            page.click("#open-button")
            page.wait_for_selector("#listing button[data-name='big.bin']")
            idle = {role: max([0, *(_rss_kib(p) for p in pids)])
                    for role, pids in _chromium_pids().items()}
            sampler = PeakSampler()
            sampler.start()
            start = time.perf_counter()
            with page.expect_download(timeout=1800_000) as dl:
                page.click("#listing button[data-name='big.bin']")
            path = dl.value.path()
            wall = time.perf_counter() - start
            sampler.stop.set()
            sampler.join()
            saved = json.loads(page.get_attribute("body", "data-last-save") or "{}")
            if not page.locator("#error").is_hidden():
                raise BenchError("the page failed: " + page.inner_text("#error"))
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            if saved.get("bytes") != size:
                raise BenchError(f"the page saved {saved.get('bytes')} bytes, not {size}")
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)
    finally:
        server.shutdown()
        server.server_close()
    peak = {**sampler.peak, "idle_renderer": idle["renderer"], "idle_browser": idle["browser"]}
    return float(saved["seconds"]), wall, peak, digest


class _CdpPipe:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, args: list[str]) -> None:
        r_in, self.w = os.pipe()  # we write, Chromium reads fd 3
        self.r, w_out = os.pipe()  # Chromium writes fd 4, we read

        def wire() -> None:
            os.dup2(r_in, 3)
            os.dup2(w_out, 4)

        self.p = subprocess.Popen([*args, "--remote-debugging-pipe"], preexec_fn=wire,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  close_fds=False)
        os.close(r_in)
        os.close(w_out)
        self.n = 0
        self.buf = b""

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        self.n += 1
        msg: dict[str, Any] = {"id": self.n, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self.recv()
            if m.get("id") == self.n:
                if "error" in m:
                    raise BenchError(f"{method}: {m['error']}")
                return dict(m.get("result", {}))

    def recv(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            self.buf += os.read(self.r, 1 << 16)
        line, self.buf = self.buf.split(b"\0", 1)
        return dict(json.loads(line))


def _page_server(isolated: bool = False) -> tuple[Any, str]:
    """The reader's files on a loopback port, running; `isolated` adds the
    COOP and COEP headers that make the page cross-origin isolated, which
    performance.measureUserAgentSpecificMemory needs. Only this benchmark's
    server sends them (`csfs web` does not): the S3 reads are CORS requests,
    which require-corp lets through, and the run compares the saved bytes."""
    from csfs.web import dist_dir, make_server

    server = make_server(dist_dir(), 0)
    if isolated:
        made = server.RequestHandlerClass  # functools.partial(handler, directory=...)

        class Isolated(made.func):  # type: ignore[name-defined,misc]
            def end_headers(self) -> None:
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                super().end_headers()

        server.RequestHandlerClass = functools.partial(Isolated, *made.args, **made.keywords)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# Samples performance.measureUserAgentSpecificMemory() one after the other
# until window.__memStop; each result's `bytes` (the JS heaps and DOM memory
# the page and its workers can reach, as the API counts them) goes to
# window.__mem. The first sample comes before the click (the idle page).
MEM_SAMPLER = """(() => {
  const m = window.__mem = {peak: 0, idle: 0, n: 0, ms: [], kinds: {}, stopped: null, error: null};
  (async () => {
    try {
      while (!window.__memStop) {
        const t = performance.now();
        const r = await performance.measureUserAgentSpecificMemory();
        m.ms.push(performance.now() - t);
        if (!m.n++) m.idle = r.bytes;
        if (r.bytes > m.peak) {
          m.peak = r.bytes;
          m.kinds = {};  // the peak's bytes by type (JavaScript, DOM, Shared)
          for (const b of r.breakdown) {
            const k = b.types.join("+") || "other";
            m.kinds[k] = (m.kinds[k] || 0) + b.bytes;
          }
        }
        await new Promise((res) => setTimeout(res, 100));
      }
    } catch (e) {
      m.error = String(e);
    }
    m.stopped = true;
  })();
  return true;
})()"""


def _raw_read(env: Env, bucket: str, url: str, size: int, want: str,
              measure: bool = False) -> dict[str, Any]:
    """Peak RSS saving big.bin with Chromium driven over a raw DevTools pipe, not
    Playwright: Playwright enables the DevTools Network domain, which keeps the
    response bodies in the renderer (most of the renderer's peak it reports).
    With `measure` (a cross-origin isolated page at `url`), the page also
    samples performance.measureUserAgentSpecificMemory() while it saves, with
    Blink's ForceEagerMeasureMemory feature: each call then runs its own
    garbage collection and answers at once, instead of at the next scheduled
    one (up to ~20 s later). The saved file is compared with the input."""
    prof = tempfile.mkdtemp(prefix="csfs-bench-chromium-", dir="/var/tmp")
    dl = tempfile.mkdtemp(prefix="csfs-bench-dl-", dir="/var/tmp")
    eager = ["--enable-blink-features=ForceEagerMeasureMemory"] if measure else []
    c = _CdpPipe(["/usr/bin/chromium", *CHROMIUM_ARGS, *eager, f"--user-data-dir={prof}",
                  "about:blank"])
    try:
        c.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": dl})
        tid = c.send("Target.createTarget", {"url": f"{url}/index.html?save=download"})["targetId"]
        sid = c.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]

        def ev(expr: str) -> Any:
            return c.send("Runtime.evaluate", {"expression": expr, "awaitPromise": True,
                                               "returnByValue": True}, sid)["result"].get("value")

        def until(expr: str) -> Any:
            deadline = time.monotonic() + 1800
            while True:
                try:
                    got = ev(expr)
                except BenchError as e:
                    # A cross-origin isolated page replaces the first document's
                    # process: no context to evaluate in for a moment.
                    if "execution context" not in str(e):
                        raise
                    got = None
                if got:
                    return got
                if time.monotonic() > deadline:
                    raise BenchError(f"the page never got {expr}")
                time.sleep(0.2)

        until("document.body && document.body.dataset.ready")
        doc = c.send("DOM.getDocument", {}, sid)["root"]["nodeId"]
        node = c.send("DOM.querySelector", {"nodeId": doc, "selector": "#keyfile"}, sid)["nodeId"]
        c.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(env.key)]}, sid)
        for k, v in (("endpoint", env.endpoint), ("bucket", bucket), ("prefix", "v"),
                     ("akid", os.environ["AWS_ACCESS_KEY_ID"]),
                     ("secret", os.environ["AWS_SECRET_ACCESS_KEY"])):
            ev(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)}")
        ev("document.getElementById('open-button').click()")
        button = "document.querySelector(\"#listing button[data-name='big.bin']\")"
        until(f"!!{button}")
        renderers = _chromium_pids()["renderer"]
        idle = {"idle_renderer": max([0, *(_rss_kib(p) for p in renderers)]),
                "idle_private": max([0, *(_rss_kib(p, "RssAnon") for p in renderers)])}
        if measure:
            if not ev("self.crossOriginIsolated"):
                raise BenchError("the page is not cross-origin isolated")
            ev(MEM_SAMPLER)
            until("window.__mem.n > 0 || window.__mem.error")
        sampler = PeakSampler()
        sampler.start()
        ev(f"{button}.click()")
        until("document.body.dataset.lastSave || document.querySelector('#error:not([hidden])')")
        sampler.stop.set()
        sampler.join()
        mem: dict[str, Any] = {}
        if measure:
            ev("window.__memStop = true")
            mem = until("window.__mem.stopped && window.__mem")
            if mem["error"]:
                raise BenchError(f"measureUserAgentSpecificMemory: {mem['error']}")
        if not ev("document.body.dataset.lastSave"):
            error = ev("document.getElementById('error').textContent")
            raise BenchError(f"the page failed: {error}")
        saved = Path(dl) / "big.bin"
        deadline = time.monotonic() + 600
        while not (saved.is_file() and saved.stat().st_size == size
                   and not list(Path(dl).glob("*.crdownload"))):
            if time.monotonic() > deadline:
                raise BenchError("the download never landed")
            time.sleep(0.2)
        if _sha256(saved) != want:
            raise BenchError("the page saved other bytes")
        return {**sampler.peak, **idle, "mem": mem}
    finally:
        c.p.kill()
        c.p.wait()
        # Chromium's network process may still write to the profile for a moment.
        for _ in range(20):
            shutil.rmtree(prof, ignore_errors=True)
            if not os.path.exists(prof):
                break
            time.sleep(0.25)
        shutil.rmtree(dl, ignore_errors=True)


def _link_first_byte(env: Env, store: str, bucket: str, repeat: int) -> list[float]:
    """ms from opening a share link (7.7) to a 1 MiB text file's first byte on
    screen (navigation start to the verified preview), one fresh page each."""
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from csfs.web import dist_dir, make_server

    text = env.tmp / "notes.txt"
    text.write_bytes(b"a line of text, and another\n" * (MiB // 28 + 1))
    text.write_bytes(text.read_bytes()[:MiB])
    env.run([env.csfs, "put", "--store", store, str(text), "/notes.txt"])
    server = make_server(dist_dir(), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [url], "AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": ["*"],
        "ExposeHeaders": ["Content-Range", "Content-Length", "ETag"]}]})
    out = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for _ in range(repeat):
                r = subprocess.run([str(env.csfs), "link", "--store", store, "/notes.txt",
                                    "--expires", "1h", "--reader", url],
                                   capture_output=True, text=True, check=True)
                page = browser.new_context().new_page()
                page.goto(r.stdout.strip())
                page.wait_for_selector("body[data-ready='1']", timeout=60_000)
                if not page.locator("#error").is_hidden():
                    raise BenchError("the link page failed: " + page.inner_text("#error"))
                shown = json.loads(page.get_attribute("body", "data-shown") or "{}")
                if shown.get("bytes") != MiB:
                    raise BenchError(f"the link page showed {shown}")
                out.append(float(shown["ms"]))
                page.context.close()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return out


def cmd_web(args: Any) -> int:
    subprocess.run([str(ROOT / "scripts" / "build-web")], check=True)
    with bench_env(args.dir, "csfs-bench-web-") as env:
        bucket = env.bucket("csfs-web")
        store = f"s3://{bucket}/v"
        env.csfs_init(store)
        src = env.tmp / "big.bin"
        with open(src, "wb") as f:
            for _ in range(args.size // MiB):
                f.write(os.urandom(MiB))
            f.write(os.urandom(args.size % MiB))
        want = hashlib.sha256(src.read_bytes()).hexdigest()
        env.run([env.csfs, "put", "--store", store, str(src), "/big.bin"])
        print(f"file: {human(args.size)}", flush=True)
        cli = []
        for i in range(args.repeat):
            out = env.tmp / f"cli-{i}.bin"
            sample = run_timed([env.csfs, "get", "--store", store, "/big.bin", str(out)], env.log)
            if hashlib.sha256(out.read_bytes()).hexdigest() != want:
                raise BenchError("csfs get returned other bytes")
            out.unlink()
            cli.append(sample)
        best_cli = min(s.seconds for s in cli)
        mb = args.size / MiB
        print(f"csfs get        : {best_cli:7.2f} s  {mb / best_cli:7.1f} MiB/s  "
              f"(best of {args.repeat}; peak RSS {max(s.maxrss_kib for s in cli) // 1024} MiB)",
              flush=True)
        # "download": the page's temporary file in the origin-private file system;
        # "blob": Blob parts, the fallback for browsers without it.
        for save in ("download", "blob"):
            page_s, wall, peak, digest = _browser_read(env, bucket, args.size, save)
            if digest != want:
                raise BenchError("the page saved other bytes")
            print(f"browser ({save:8}): {page_s:7.2f} s  {mb / page_s:7.1f} MiB/s  "
                  f"= {best_cli / page_s:.2f}x the CLI (click to last verified chunk; "
                  f"{wall:.2f} s until the download landed)")
            # Playwright's DevTools network capture keeps response bodies (each
            # under 10 MB) in the renderer: the line after these is a person's.
            print(f"  peak RSS under Playwright: renderer {peak['renderer'] // 1024} MiB "
                  f"(idle {peak['idle_renderer'] // 1024}), browser process "
                  f"{peak['browser'] // 1024} MiB (idle {peak['idle_browser'] // 1024})",
                  flush=True)
        server, url = _page_server()
        iso_server, iso_url = _page_server(isolated=True)
        env.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
            "AllowedOrigins": [url, iso_url], "AllowedMethods": ["GET", "HEAD"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["Content-Range", "Content-Length", "ETag"]}]})
        try:
            peak = _raw_read(env, bucket, url, args.size, want)
            # A second run for the page's own count: its measurements each run a
            # garbage collection, which would lower the RSS seen by the first.
            iso = _raw_read(env, bucket, iso_url, args.size, want, measure=True)
        finally:
            for s in (server, iso_server):
                s.shutdown()
                s.server_close()
        # What a person's browser holds: no DevTools client keeps response bodies.
        print(f"browser (download, no DevTools network domain): peak RSS renderer "
              f"{peak['renderer'] // 1024} MiB (idle {peak['idle_renderer'] // 1024}), private "
              f"{peak['renderer_private'] // 1024} MiB (idle {peak['idle_private'] // 1024}), "
              f"browser process {peak['browser'] // 1024} MiB; bytes compared", flush=True)
        mem = iso["mem"]
        print(f"browser (download, cross-origin isolated page, same): peak "
              f"performance.measureUserAgentSpecificMemory() {mem['peak'] / MiB:.1f} MiB "
              f"(idle {mem['idle'] / MiB:.1f}; at the peak "
              f"{', '.join(f'{k} {v / MiB:.1f}' for k, v in sorted(mem['kinds'].items()))}; "
              f"{mem['n']} samples, each "
              f"{min(mem['ms']):.0f}-{max(mem['ms']):.0f} ms, eager: Blink feature "
              f"ForceEagerMeasureMemory); peak RSS renderer {iso['renderer'] // 1024} MiB, "
              f"private {iso['renderer_private'] // 1024} MiB; bytes compared", flush=True)
        ms = _link_first_byte(env, store, bucket, args.repeat)
        print(f"share link, 1 MiB text: {min(ms):.0f} ms from opening the link to the first "
              f"byte on screen (best of {len(ms)}; all: {', '.join(f'{m:.0f}' for m in ms)})",
              flush=True)
    return 0


def register(sub: Any, parse_size: Any) -> None:
    p = sub.add_parser("web", help="browser reader decrypt throughput vs csfs get")
    p.add_argument("--size", type=parse_size, default=256 * MiB, help="file size (default 256M)")
    p.add_argument("--repeat", type=int, default=3, help="csfs get runs (default 3)")
    p.add_argument("--dir", default="/dev/shm", help="scratch folder (default /dev/shm)")
    p.set_defaults(func=cmd_web)
