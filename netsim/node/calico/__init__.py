"""Calico's node agents on netsim: Felix's dataplane (felix.py) and BIRD for BGP (bird.py)."""
