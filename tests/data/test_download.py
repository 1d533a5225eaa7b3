"""Downloads against a local http.server: a failing mirror, a file with a wrong checksum, a cut transfer."""
import functools
import http.server
import threading
from dataclasses import replace

import pytest

from normlab.data import FASHION_MNIST, DownloadError, FashionMNIST, fetch
from normlab.data.synthetic import write_idx_dataset


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; /cut/... promises more bytes than it sends, then closes."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith("/cut/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\0" * 100)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over tmp/www; yields (base URL, www folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, httpd.requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def mirrors(server):
    """Official-like files at /good/, the same but one damaged label file at /bad/, nothing at /gone/."""
    base, www, requests = server
    info = write_idx_dataset(www / "good", replace(FASHION_MNIST, system_dirs=()))
    write_idx_dataset(www / "bad", FASHION_MNIST)
    (www / "bad" / "train-labels-idx1-ubyte.gz").write_bytes(b"not the official file")
    return base, www, requests, info


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def test_fetch_tries_mirrors_in_turn_and_verifies(tmp_path, mirrors):
    base, www, requests, info = mirrors
    info = replace(info, mirrors=(f"{base}/gone/", f"{base}/bad/", f"{base}/good/"))
    folder = fetch(info, tmp_path / "data")
    assert folder == tmp_path / "data" / "fashion-mnist"
    assert files_in(folder) == sorted(r.filename for r in info.resources)  # no temporaries left
    for r in info.resources:
        assert (folder / r.filename).read_bytes() == (www / "good" / r.filename).read_bytes()
    # every file: the failing mirror first, then the next; the damaged file falls through to /good/
    assert requests[:2] == ["/gone/train-images-idx3-ubyte.gz", "/bad/train-images-idx3-ubyte.gz"]
    assert requests[2:5] == ["/gone/train-labels-idx1-ubyte.gz", "/bad/train-labels-idx1-ubyte.gz",
                             "/good/train-labels-idx1-ubyte.gz"]


def test_dataset_download_flag_fetches_into_the_cache(tmp_path, monkeypatch, mirrors):
    base, _, _, info = mirrors
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cls = type("Tiny", (FashionMNIST,), {"info": replace(info, mirrors=(f"{base}/good/",))})
    ds = cls(train=False, download=True)
    assert ds.folder == tmp_path / "xdg" / "normlab" / "fashion-mnist" and len(ds) == 10
    assert files_in(ds.folder) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # only what was asked
    assert cls(train=False).source == "cache"  # found without downloading the next time


def test_all_mirrors_failing_names_each_and_leaves_nothing(tmp_path, mirrors):
    base, _, _, info = mirrors
    info = replace(info, mirrors=(f"{base}/gone/", f"{base}/bad/", f"{base}/cut/"))
    with pytest.raises(DownloadError) as raised:
        fetch(info, tmp_path / "data")
    message = str(raised.value)
    assert "train-labels-idx1-ubyte.gz; every mirror failed" in message
    assert f"{base}/gone/train-labels-idx1-ubyte.gz: HTTP Error 404" in message
    assert f"{base}/bad/train-labels-idx1-ubyte.gz: MD5 mismatch: got " in message
    assert f"{base}/cut/train-labels-idx1-ubyte.gz: transfer cut off after 102 of 100000 bytes" in message
    assert "apt-get install dataset-fashion-mnist" in message and "NORMLAB_DATA" in message
    # the first file came from /bad/ (it is intact there); the damaged one left no file and no temporary
    assert files_in(tmp_path / "data" / "fashion-mnist") == ["train-images-idx3-ubyte.gz"]


def test_a_damaged_cached_file_is_replaced_only_by_a_verified_one(tmp_path, mirrors):
    base, www, requests, info = mirrors
    info = replace(info, mirrors=(f"{base}/good/",))
    folder = fetch(info, tmp_path / "data")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"damaged")
    requests.clear()
    fetch(info, tmp_path / "data")
    assert requests == ["/good/t10k-images-idx3-ubyte.gz"]  # the verified files were kept
    assert (folder / "t10k-images-idx3-ubyte.gz").read_bytes() == (www / "good" / "t10k-images-idx3-ubyte.gz").read_bytes()
