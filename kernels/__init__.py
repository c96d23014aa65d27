"""What computes a layer: the op registry and the backends (cpu/ numpy, cuda/ later)."""
