FETCH = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}/').read().decode())\""


def test_page_is_served(host):
    assert host.check_output(FETCH.format(8001)).startswith("peer ")
