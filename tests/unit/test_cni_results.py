"""CNI results between spec versions (netsim.cni.spec), pure.  tests/kernel/test_cni_spec.py
calls the plugins in namespaces for the spec's error codes."""

import json

from netsim.cni import spec


def test_results_convert_between_versions():
    result = {"cniVersion": "1.1.0",
              "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1450, "sandbox": "/x"}],
              "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}],
              "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400}], "dns": {}}
    old = spec.convert(result, "0.3.1")
    assert old["ips"][0]["version"] == "4"
    assert "mtu" not in old["interfaces"][0] and old["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
    v1 = spec.convert(result, "1.0.0")
    assert "version" not in v1["ips"][0]
    back = spec.to_latest(json.loads(json.dumps(old)))
    assert back["ips"] == result["ips"]
    assert spec.convert(result, "1.1.0")["routes"][0]["mtu"] == 1400


