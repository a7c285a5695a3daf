import os, time
from mirror.backends.dropbox import DropboxDriver
from mirror.hashing import dropbox_content_hash

def test_smoke(dropbox_server, tmp_path):
    d = DropboxDriver.connect("dropbox://Inv", {"token": dropbox_server.token, "retry_backoff": 0.01})
    p = tmp_path / "a.txt"; p.write_bytes(b"hello")
    e = d.put(str(p), "sub/a.txt", time.time_ns())
    print(e)
    big = tmp_path / "big"; big.write_bytes(os.urandom(20*1024*1024+5))
    e2 = d.put(str(big), "big.bin", time.time_ns())
    assert dropbox_server.fake.file_bytes("/inv/big.bin") == big.read_bytes()
    print(d.list())
    print(dropbox_server.fake.routes())
    assert d.list()["big.bin"].hash == dropbox_content_hash(str(big))
