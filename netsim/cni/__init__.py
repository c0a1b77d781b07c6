"""CNI plugins and runtime, by the CNI specification v1.1."""
