"""vagrant/multi/: the scenario its three VMs run names them as its Vagrantfile does (pure).
tests/e2e/test_vagrant.py validates the Vagrantfiles and provisions a clean Debian 12."""

from tests.conftest import REPO


def test_multi_cluster_scenario_names_the_vms():
    from netsim.model.scenario import load_scenario, manifest_objects

    path = REPO / "vagrant" / "multi" / "cluster.yaml"
    scn = load_scenario(path)
    assert [n.name for n in scn.nodes] == ["netsim-1", "netsim-2", "netsim-3"]
    assert manifest_objects(scn, path.parent)
    vagrantfile = (REPO / "vagrant" / "multi" / "Vagrantfile").read_text()
    for node in scn.nodes:
        assert f'"{node.name}" => "{node.ip}"' in vagrantfile


