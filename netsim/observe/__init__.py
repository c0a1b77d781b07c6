"""The observe layer: seeing a running cluster: probe, check, trace (with packet and netfilter
trace readers) and graph.  May import: every layer below it; never netsim.cli."""
