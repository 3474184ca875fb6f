FETCH = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}/').read().decode())\""


def test_page_is_served(host):
    assert host.check_output(FETCH.format(8000)) == "hello from web in sandbox"


def test_init_is_executable(host):
    assert host.file("/usr/local/sbin/workbench-init").mode == 0o755
