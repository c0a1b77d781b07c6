"""The CNI layer: the CNI specification v1.1 (spec), its plugins, a runtime that execs them,
the plugin server behind the compiled launchers, and a pod's gate.
May import: netsim.kernel and the standard library (plugins run on every pod's critical path)."""
