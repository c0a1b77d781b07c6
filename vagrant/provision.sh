#!/usr/bin/env bash
# Provisions the netsim VM: system packages and the project, then a smoke run of the basic scenario.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq python3 python3-venv make >/dev/null
cd /netsim
scripts/install-deps.sh
ln -sf /netsim/.venv/bin/netsim /usr/local/bin/netsim
netsim up scenarios/basic.yaml
netsim down basic
