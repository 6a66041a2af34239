import os, time, pytest
pytestmark = pytest.mark.mount
def test_smoke(mounted):
    t=time.time()
    open(mounted.p("a"),"wb").write(b"hello")
    mounted.sync()
    assert mounted.vault.cat("a") == b"hello"
    mounted.remount()
    assert open(mounted.p("a"),"rb").read() == b"hello"
    print(mounted.vault.list_keys())
    print("took", time.time()-t)
