"""(being written)"""
KERNELS = {}
CASES = {}
