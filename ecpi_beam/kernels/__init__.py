"""Science kernels: plain numpy/scipy functions, no Beam import."""
